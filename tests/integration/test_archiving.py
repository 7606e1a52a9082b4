"""Archiving old mail by the preferences' threshold, and on request."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from cli.main import cli
from shared.archive import archive_old, months_before
from shared.db import session_scope
from shared.models import Email, EmailTrace, Preferences, utcnow

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def add_email(
    status: str, age_days: int, direction: str = "out", now: datetime = NOW
) -> int:
    at = now - timedelta(days=age_days)
    with session_scope() as session:
        email = Email(
            direction=direction,
            status=status,
            subject=f"{status} {age_days} days old",
            sent_at=at if direction == "out" and status == "processed" else None,
            received_at=at if direction == "in" else None,
        )
        session.add(email)
        session.flush()
        return email.id


def set_threshold(months: int | None) -> None:
    with session_scope() as session:
        session.merge(Preferences(id=1, archive_after_months=months))


def archived_ids() -> set[int]:
    with session_scope() as session:
        return set(session.scalars(select(Email.id).where(Email.archived)))


def test_processed_mail_older_than_the_threshold_is_archived() -> None:
    set_threshold(3)
    old_out = add_email("processed", 100)
    old_in = add_email("processed", 120, direction="in")
    recent = add_email("processed", 80)

    with session_scope() as session:
        count = archive_old(session, NOW)

    assert count == 2
    assert archived_ids() == {old_out, old_in}
    assert recent not in archived_ids()


def test_failed_and_waiting_mail_stays_visible_however_old() -> None:
    set_threshold(0)
    add_email("failed", 400)
    add_email("pending_processing", 400)
    add_email("in_process", 400)
    done = add_email("processed", 1)

    with session_scope() as session:
        archive_old(session, NOW)

    assert archived_ids() == {done}


def test_nothing_is_archived_by_age_while_the_preference_is_none() -> None:
    set_threshold(None)
    add_email("processed", 4000)

    with session_scope() as session:
        count = archive_old(session, NOW)

    assert count == 0
    assert archived_ids() == set()


def test_archiving_is_recorded_in_the_email_trace() -> None:
    set_threshold(6)
    old = add_email("processed", 200)

    with session_scope() as session:
        archive_old(session, NOW)
        traces = list(session.scalars(select(EmailTrace)))

    assert [(t.email_id, t.stage, t.decision) for t in traces] == [
        (old, "archiver", "archived")
    ]
    assert traces[0].detail == "older than 6 months"


def test_months_are_calendar_months() -> None:
    assert months_before(NOW, 3) == datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
    assert months_before(NOW, 12) == datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
    end_of_march = datetime(2026, 3, 31, tzinfo=UTC)
    assert months_before(end_of_march, 1) == datetime(2026, 2, 28, tzinfo=UTC)


def sysmail(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def listed(*options: str) -> set[int]:
    result = sysmail("emails", "list", "--json", *options)
    assert result.exit_code == 0, result.output
    return {row["id"] for row in json.loads(result.stdout)}


def test_archive_and_restore_chosen_emails_from_the_cli() -> None:
    first = add_email("processed", 1)
    second = add_email("failed", 1)
    untouched = add_email("processed", 1)

    archived = sysmail("emails", "archive", str(first), str(second))
    after_archive = archived_ids()
    restored = sysmail("emails", "restore", str(second))

    assert archived.exit_code == 0, archived.output
    assert "2 archived" in archived.stdout
    assert after_archive == {first, second}
    assert restored.exit_code == 0, restored.output
    assert archived_ids() == {first}
    assert untouched not in archived_ids()


def test_emails_list_leaves_out_archived_mail_unless_asked() -> None:
    kept = add_email("processed", 1)
    hidden = add_email("processed", 1)
    sysmail("emails", "archive", str(hidden))

    assert listed() == {kept}
    assert listed("--include-archived") == {kept, hidden}
    sysmail("emails", "restore", str(hidden))
    assert listed() == {kept, hidden}


def test_an_unknown_id_archives_nothing() -> None:
    known = add_email("processed", 1)

    result = sysmail("emails", "archive", str(known), "999")

    assert result.exit_code == 1
    assert result.stderr == "sysmail: error: no such email: 999\n"
    assert archived_ids() == set()


def test_mail_on_its_way_cannot_be_archived() -> None:
    done = add_email("processed", 1)
    waiting = add_email("pending_processing", 1)

    result = sysmail("emails", "archive", str(done), str(waiting))

    assert result.exit_code == 1
    assert f"cannot archive: {waiting}" in result.stderr
    assert archived_ids() == set()


@pytest.fixture
def archiver_actor(broker: str) -> None:
    """The archiver's actor sends to this run's broker."""


def test_the_archiver_archives_the_given_emails_or_the_old_ones(
    archiver_actor: None,
) -> None:
    from workers.archiver import archiver

    set_threshold(0)
    chosen = add_email("failed", 1)
    # Older than "0 months" means anything before now.
    old = add_email("processed", 1, now=utcnow())

    archiver({"email_ids": [chosen]})
    only_chosen = archived_ids()
    archiver({"email_ids": []})

    assert only_chosen == {chosen}
    assert archived_ids() == {chosen, old}
