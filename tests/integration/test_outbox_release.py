"""The scheduler finds mail to release among mail long sent, and lets none go.

Due mail is looked up through the outbox table rather than an index on the
email's status; these tests check every way into it: queued one by one,
queued by a campaign, and made pending again by a retry.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.devmail import SmtpServer
from shared import delivery, outbox
from shared.campaigns import create_campaign, send_campaign
from shared.db import session_scope
from shared.messages import SendEmail
from shared.models import Contact, Email, Template
from tests.fixtures.accounts import add_smtp_account, queue_unreleased


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The email ids the outbox publishes, in place of the broker."""
    ids: list[int] = []

    def publish(message: SendEmail, **_: Any) -> None:
        ids.extend(message.email_ids)

    monkeypatch.setattr(outbox, "publish", publish)
    return ids


def status(email_id: int) -> str:
    with session_scope() as session:
        email = session.get(Email, email_id)
        assert email is not None
        return email.status


def test_release_due_finds_due_mail_among_processed_ones(
    smtp_server: SmtpServer, published: list[int]
) -> None:
    add_smtp_account(smtp_server, display_name="")
    sent = queue_unreleased(5)
    delivery.deliver_chunk(sent)
    assert [status(i) for i in sent] == ["processed"] * 5
    waiting = queue_unreleased(2)

    assert outbox.release_due() == 2

    assert sorted(published) == waiting
    assert outbox.release_due() == 0


def test_a_failed_email_retried_is_released_again_by_the_scheduler(
    smtp_server: SmtpServer, published: list[int]
) -> None:
    add_smtp_account(smtp_server, display_name="")
    [email_id] = queue_unreleased(1)
    smtp_server.fail_next(550, "mailbox unavailable")
    delivery.deliver_chunk([email_id])
    assert status(email_id) == "failed"
    # A pass while it is failed: it has nothing to release.
    assert outbox.release_due() == 0

    with session_scope() as session:
        outbox.retry(session, email_id)

    assert outbox.release_due() == 1
    assert published == [email_id]
    delivery.deliver_chunk(published)
    assert status(email_id) == "processed"
    assert len(smtp_server.messages) == 1


def test_a_campaign_queued_while_the_broker_is_down_is_released_by_the_scheduler(
    smtp_server: SmtpServer, published: list[int]
) -> None:
    add_smtp_account(smtp_server, display_name="")
    with session_scope() as session:
        session.add(
            Template(id="news", subject="News", text="Hello {{ contact.name }}")
        )
        session.add_all(
            Contact(id=f"c{n}", name=f"C {n}", email=f"c{n}@example.test")
            for n in range(3)
        )
        session.flush()
        create_campaign(session, "spring", account_id="support", template_id="news")
    with session_scope() as session:
        queued = send_campaign(session, "spring")

    assert outbox.release_due() == 3

    assert sorted(published) == sorted(queued.email_ids)
