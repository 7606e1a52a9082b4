"""Queuing outgoing email: ids, tags, headers, attachments, accounts, batches."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select

from services.devmail import HOST, SmtpServer, free_port
from shared import delivery, outbox
from shared.db import session_scope
from shared.errors import ConfigError, NotFound
from shared.mail.compose import InvalidHeader
from shared.mail.smtp import POOL
from shared.models import (
    Account,
    Attachment,
    Email,
    EmailTrace,
    Preferences,
    User,
)
from tests.fixtures.accounts import add_smtp_account


class CountingHandler:
    """Keeps each message with the client port it came from: one per session."""

    def __init__(self) -> None:
        self.received: list[tuple[int, bytes]] = []

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.received.append((session.peer[1], bytes(envelope.original_content or b"")))
        return "250 OK"


@pytest.fixture
def counting_server() -> Iterator[tuple[int, CountingHandler]]:
    handler = CountingHandler()
    port = free_port()
    controller = Controller(handler, hostname=HOST, port=port)
    controller.start()
    yield port, handler
    controller.stop()
    POOL.close_all()


@pytest.fixture
def smtp(smtp_server: SmtpServer) -> Iterator[SmtpServer]:
    yield smtp_server
    POOL.close_all()


def add_account(**fields: Any) -> None:
    values: dict[str, Any] = {
        "id": "support",
        "address": "support@example.test",
        "display_name": "Example Support",
        "outgoing_host": HOST,
        "outgoing_port": 25,
        "outgoing_encryption": "none",
        **fields,
    }
    with session_scope() as session:
        session.add(Account(**values))


def queue_one(**fields: Any) -> int:
    with session_scope() as session:
        account = session.get(Account, "support")
        assert account is not None
        values: dict[str, Any] = {
            "to": ["customer@example.test"],
            "subject": "Your order",
            "text": "It ships today.",
            **fields,
        }
        return outbox.queue_email(session, account=account, **values).id


def load(email_id: int) -> Email:
    with session_scope() as session:
        email = session.get(Email, email_id)
        assert email is not None
        return email


def parsed(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_a_queued_email_has_its_message_id_and_tagged_subject_before_any_attempt() -> (
    None
):
    add_account()
    with session_scope() as session:
        session.add(Preferences(id=1, tag_prefix="[Ticket ", tag_suffix="]"))

    email_id = queue_one()

    email = load(email_id)
    assert email.status == "pending_processing" and email.attempts == 0
    assert email.message_id is not None
    assert email.message_id.endswith("@example.test>")
    assert email.subject == f"Your order [Ticket #{email_id}]"
    assert email.from_address == "support@example.test"


def test_the_message_id_stored_is_the_one_the_server_receives(
    smtp: SmtpServer,
) -> None:
    add_smtp_account(smtp)
    email_id = queue_one()

    delivery.deliver(email_id)

    [(_, _, raw)] = smtp.messages
    assert parsed(raw)["Message-ID"] == load(email_id).message_id


def test_attachments_the_account_does_not_allow_are_dropped_and_recorded(
    smtp: SmtpServer,
) -> None:
    add_smtp_account(smtp, attachment_types=[".pdf"], attachment_max_bytes=100)
    email_id = queue_one(
        attachments=[
            ("invoice.pdf", "application/pdf", b"%PDF small"),
            ("script.exe", "application/octet-stream", b"MZ"),
            ("huge.pdf", "application/pdf", b"x" * 101),
        ]
    )

    delivery.deliver(email_id)

    with session_scope() as session:
        rows = {
            a.filename: a
            for a in session.scalars(
                select(Attachment).where(Attachment.email_id == email_id)
            )
        }
        traces = list(
            session.scalars(select(EmailTrace).where(EmailTrace.email_id == email_id))
        )
    assert rows["invoice.pdf"].dropped_reason is None
    assert "type not allowed" in (rows["script.exe"].dropped_reason or "")
    assert "more than the limit" in (rows["huge.pdf"].dropped_reason or "")
    assert sorted(t.detail.split(":")[0] for t in traces) == ["huge.pdf", "script.exe"]
    [(_, _, raw)] = smtp.messages
    names = [a.get_filename() for a in parsed(raw).iter_attachments()]
    assert names == ["invoice.pdf"]


def test_an_account_without_attachments_drops_every_file() -> None:
    add_account(attachments_allowed=False)

    email_id = queue_one(attachments=[("a.pdf", "application/pdf", b"x")])

    with session_scope() as session:
        [row] = session.scalars(
            select(Attachment).where(Attachment.email_id == email_id)
        )
    assert row.data is None
    assert "sends no attachments" in (row.dropped_reason or "")


def test_a_reply_carries_in_reply_to_references_and_automatic_headers(
    smtp: SmtpServer,
) -> None:
    add_smtp_account(smtp, reply_address="help@example.test")
    with session_scope() as session:
        received = Email(
            direction="in",
            account_id="support",
            message_id="<question@customer.test>",
            references="<earlier@customer.test>",
            subject="Question",
        )
        session.add(received)
        session.flush()
        account = session.get(Account, "support")
        assert account is not None
        reply_id = outbox.queue_email(
            session,
            account=account,
            to=["customer@customer.test"],
            subject="Re: Question",
            text="We got it.",
            kind="receipt",
            reply_to_email=received,
        ).id

    delivery.deliver(reply_id)

    message = parsed(smtp.messages[0][2])
    assert message["In-Reply-To"] == "<question@customer.test>"
    assert message["References"].split() == [
        "<earlier@customer.test>",
        "<question@customer.test>",
    ]
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Auto-Response-Suppress"] == "All"
    assert message["Reply-To"] == "help@example.test"
    assert message["From"] == "Example Support <support@example.test>"


def test_a_line_break_in_the_subject_is_refused_when_queuing() -> None:
    add_account()

    with pytest.raises(InvalidHeader):
        queue_one(subject="Hi\r\nBcc: victim@example.test")

    with session_scope() as session:
        assert session.scalars(select(Email)).first() is None


@pytest.mark.parametrize("batch_size", [3, 0])
def test_batch_size_caps_the_emails_sent_over_one_connection(
    counting_server: tuple[int, CountingHandler], batch_size: int
) -> None:
    port, handler = counting_server
    add_account(outgoing_port=port, batch_size=batch_size)
    ids = [queue_one(to=[f"c{n}@example.test"]) for n in range(7)]

    for email_id in ids:
        assert delivery.deliver(email_id).status == "processed"

    per_session: dict[int, int] = {}
    for client_port, _ in handler.received:
        per_session[client_port] = per_session.get(client_port, 0) + 1
    if batch_size:
        assert sorted(per_session.values()) == [1, 3, 3]
    else:
        assert list(per_session.values()) == [7]


def test_the_account_chosen_explicitly_sends() -> None:
    add_account()
    add_account(id="sales", address="sales@example.test")
    with session_scope() as session:
        session.add(Preferences(id=1, default_account_id="support"))

    with session_scope() as session:
        assert outbox.resolve_account(session, "sales").id == "sales"


def test_without_a_choice_the_users_default_account_sends() -> None:
    add_account()
    add_account(id="sales", address="sales@example.test")
    with session_scope() as session:
        session.add(Preferences(id=1, default_account_id="support"))
        session.add(User(id="ann", email="ann@x.test", default_account_id="sales"))
        session.add(User(id="bob", email="bob@x.test"))

    with session_scope() as session:
        assert outbox.resolve_account(session, user_id="ann").id == "sales"
        assert outbox.resolve_account(session, user_id="bob").id == "support"
        assert outbox.resolve_account(session).id == "support"


def test_with_no_account_to_choose_from_the_error_says_what_to_set() -> None:
    with session_scope() as session:
        with pytest.raises(ConfigError, match="set the default account"):
            outbox.resolve_account(session)
        with pytest.raises(NotFound, match="account nope does not exist"):
            outbox.resolve_account(session, "nope")


def test_an_inactive_account_is_refused_with_a_clear_error() -> None:
    add_account(active=False)
    with session_scope() as session:
        session.add(Preferences(id=1, default_account_id="support"))

    with (
        session_scope() as session,
        pytest.raises(ConfigError, match=r"support .* is inactive"),
    ):
        outbox.resolve_account(session)


def test_an_email_is_built_once_at_queue_time_and_sent_as_stored(
    smtp: SmtpServer,
) -> None:
    add_smtp_account(smtp)
    email_id = queue_one()
    stored = load(email_id).raw

    outcome = delivery.deliver(email_id)

    assert outcome.status == "processed"
    assert stored is not None
    [(_, _, received)] = smtp.messages
    assert received.replace(b"\r\n", b"\n") == stored.replace(b"\r\n", b"\n")


def test_canceling_a_pending_email_keeps_the_sender_from_sending_it(
    smtp: SmtpServer,
) -> None:
    add_smtp_account(smtp)
    email_id = queue_one()

    with session_scope() as session:
        outbox.cancel(session, email_id)
    outcome = delivery.deliver(email_id)

    assert outcome.status == "canceled"
    assert load(email_id).status == "canceled"
    assert smtp.messages == []


def test_an_email_stored_with_a_line_break_in_its_subject_fails_unsent(
    smtp: SmtpServer,
) -> None:
    add_smtp_account(smtp)
    email_id = queue_one()
    with session_scope() as session:
        stored = session.get(Email, email_id)
        assert stored is not None
        stored.subject = "Hi\r\nBcc: victim@example.test"
        # Stored without its message, as by a path that does not build one:
        # the sender builds it and must refuse the subject.
        stored.raw = None

    outcome = delivery.deliver(email_id)

    assert outcome.status == "failed"
    assert "line break" in (load(email_id).last_error or "")
    assert smtp.messages == []
