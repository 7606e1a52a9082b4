"""``sysmail send``, ``notify`` and ``emails``, as an operator types them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from cli.main import cli
from services.devmail import SmtpServer
from shared.db import session_scope
from shared.mail import smtp
from shared.models import Email, Preferences, Template, User, utcnow
from tests.fixtures.accounts import add_smtp_account


@pytest.fixture
def broker(broker: str) -> Iterator[str]:
    """The run's broker; the sender's pooled connections closed after."""
    yield broker
    smtp.POOL.close_all()


@pytest.fixture
def account(smtp_server: SmtpServer, broker: str) -> SmtpServer:
    add_smtp_account(smtp_server, attachment_types=[".pdf"])
    with session_scope() as session:
        session.add(Preferences(id=1, default_account_id="support"))
    return smtp_server


def sysmail(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def show(email_id: int) -> dict[str, Any]:
    result = sysmail("emails", "show", str(email_id), "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def test_send_prints_the_email_id_of_the_queued_email(account: SmtpServer) -> None:
    result = sysmail(
        "send",
        "--account",
        "support",
        "--to",
        "a@x.test",
        "--to",
        "b@x.test",
        "--subject",
        "Hello",
        "--body",
        "Welcome aboard.",
    )

    assert result.exit_code == 0, result.output
    email_id = int(result.output)
    record = show(email_id)
    assert record["status"] == "pending_processing"
    assert record["to"] == ["a@x.test", "b@x.test"]
    assert record["subject"] == f"Hello [#{email_id}]"
    assert record["account"] == "support"


def test_send_at_a_time_stores_the_schedule(account: SmtpServer) -> None:
    at = (utcnow() + timedelta(hours=2)).replace(microsecond=0)

    result = sysmail(
        "send",
        "--to",
        "a@x.test",
        "--subject",
        "Later",
        "--body",
        "b",
        "--at",
        at.isoformat(),
    )

    record = show(int(result.output))
    assert datetime.fromisoformat(record["scheduled_at"]) == at
    first = record["history"][0]
    assert first["from"] is None
    assert first["reason"].startswith("queued for")


def test_send_at_a_time_without_a_zone_means_the_machines_local_time(
    account: SmtpServer, local_time_ahead_of_utc: None
) -> None:
    result = sysmail(
        "send", "--to", "a@x.test", "--subject", "Later", "--body", "b",
        "--at", "2030-01-02T09:00",
    )  # fmt: skip
    explicit = sysmail(
        "send", "--to", "a@x.test", "--subject", "Later", "--body", "b",
        "--at", "2030-01-02T09:00Z",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    local = datetime.fromisoformat(show(int(result.output))["scheduled_at"])
    assert local == datetime(2030, 1, 2, 3, 30, tzinfo=UTC)
    zoned = datetime.fromisoformat(show(int(explicit.output))["scheduled_at"])
    assert zoned == datetime(2030, 1, 2, 9, 0, tzinfo=UTC)
    assert "this machine's local time" in sysmail("send", "--help").output


def test_send_at_a_time_that_is_no_time_fails_in_one_line(account: SmtpServer) -> None:
    result = CliRunner().invoke(
        cli, ["send", "--to", "a@x.test", "--subject", "s", "--body", "b",
              "--at", "next tuesday"],
    )  # fmt: skip

    assert result.exit_code == 1
    assert result.stderr == (
        "sysmail: error: --at 'next tuesday' is not an ISO-8601 time\n"
    )
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Email)) == 0


@pytest.fixture
def bob(account: SmtpServer) -> SmtpServer:
    """A second account, sales, on the same server; bob sends from it."""
    add_smtp_account(account, "sales")
    with session_scope() as session:
        session.add(
            User(
                id="bob", email="bob@corp.test", name="Bob", default_account_id="sales"
            )
        )
        session.add(User(id="cy", email="cy@corp.test", name="Cy"))
    return account


def test_send_as_a_user_goes_from_the_users_own_default_account(
    bob: SmtpServer,
) -> None:
    result = sysmail(
        "send", "--as-user", "bob", "--to", "a@x.test", "--subject", "Offer",
        "--body", "b",
    )  # fmt: skip
    email_id = int(result.output)
    sysmail("emails", "process", str(email_id))

    assert show(email_id)["account"] == "sales"
    [(envelope_from, _, raw)] = bob.messages
    assert envelope_from == "sales@example.test"
    assert message_from_bytes(raw, policy=policy.default)["From"] == (
        "Bob <bob@corp.test>"
    )


def test_send_as_a_user_without_a_default_account_goes_from_the_preferences_default(
    bob: SmtpServer,
) -> None:
    result = sysmail(
        "send", "--as-user", "cy", "--to", "a@x.test", "--subject", "Offer",
        "--body", "b",
    )  # fmt: skip
    email_id = int(result.output)
    sysmail("emails", "process", str(email_id))

    assert show(email_id)["account"] == "support"
    [(envelope_from, _, _)] = bob.messages
    assert envelope_from == "support@example.test"


def test_send_with_no_account_to_use_fails_in_one_line_and_stores_nothing(
    broker: str,
) -> None:
    result = CliRunner().invoke(
        cli, ["send", "--to", "a@x.test", "--subject", "s", "--body", "b"]
    )

    assert result.exit_code == 1
    assert result.output.startswith("sysmail: error: no account to send from")
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Email)) == 0


def test_a_disallowed_attachment_shows_as_dropped_with_its_reason(
    account: SmtpServer, tmp_path: Path
) -> None:
    (tmp_path / "notes.pdf").write_bytes(b"%PDF")
    (tmp_path / "tool.exe").write_bytes(b"MZ")

    result = sysmail(
        "send",
        "--to",
        "a@x.test",
        "--subject",
        "Files",
        "--body",
        "b",
        "--attach",
        str(tmp_path / "notes.pdf"),
        "--attach",
        str(tmp_path / "tool.exe"),
    )

    attachments = show(int(result.output))["attachments"]
    assert [(a["filename"], a["dropped_reason"] is None) for a in attachments] == [
        ("notes.pdf", True),
        ("tool.exe", False),
    ]


def test_emails_show_gives_the_history_with_times_and_the_servers_reply(
    account: SmtpServer,
) -> None:
    email_id = int(
        sysmail("send", "--to", "a@x.test", "--subject", "s", "--body", "b").output
    )

    result = sysmail("emails", "process", str(email_id))

    assert result.exit_code == 0, result.output
    assert "processed" in result.output
    history = show(email_id)["history"]
    assert [h["to"] for h in history] == [
        "pending_processing",
        "in_process",
        "processed",
    ]
    assert all(datetime.fromisoformat(h["at"]) for h in history)
    assert history[-1]["smtp_code"] == 250
    assert history[-1]["server_reply"] == "Message accepted for delivery"
    text = sysmail("emails", "show", str(email_id)).output
    assert "in_process -> processed: accepted by the server" in text


def test_emails_process_sends_a_failed_email_now(account: SmtpServer) -> None:
    email_id = int(
        sysmail("send", "--to", "a@x.test", "--subject", "s", "--body", "b").output
    )
    account.fail_next(451, "Greylisted")
    sysmail("emails", "process", str(email_id))
    assert show(email_id)["status"] == "failed"

    result = sysmail("emails", "process", str(email_id))

    assert result.exit_code == 0
    assert show(email_id)["status"] == "processed"
    assert len(account.messages) == 1


def test_emails_retry_puts_a_failed_email_back_with_its_attempts_reset(
    account: SmtpServer,
) -> None:
    email_id = int(
        sysmail("send", "--to", "a@x.test", "--subject", "s", "--body", "b").output
    )
    account.fail_next(554, "Rejected")
    sysmail("emails", "process", str(email_id))

    result = sysmail("emails", "retry", str(email_id))

    assert result.exit_code == 0, result.output
    record = show(email_id)
    assert (record["status"], record["attempts"]) == ("pending_processing", 0)
    assert record["history"][-1]["reason"] == "retry asked"


def test_emails_cancel_refuses_an_email_already_sent(account: SmtpServer) -> None:
    email_id = int(
        sysmail("send", "--to", "a@x.test", "--subject", "s", "--body", "b").output
    )
    sysmail("emails", "process", str(email_id))

    result = CliRunner().invoke(cli, ["emails", "cancel", str(email_id)])

    assert result.exit_code == 1
    assert "only pending emails can be canceled" in result.output
    assert show(email_id)["status"] == "processed"


def test_emails_list_filters_by_status_and_direction(account: SmtpServer) -> None:
    sent = int(
        sysmail("send", "--to", "a@x.test", "--subject", "1", "--body", "b").output
    )
    waiting = int(
        sysmail("send", "--to", "a@x.test", "--subject", "2", "--body", "b").output
    )
    sysmail("emails", "process", str(sent))

    result = sysmail(
        "emails",
        "list",
        "--status",
        "pending_processing",
        "--direction",
        "out",
        "--json",
    )

    assert [row["id"] for row in json.loads(result.output)] == [waiting]


def test_notify_password_changed_sends_the_template_to_the_user(
    account: SmtpServer,
) -> None:
    with session_scope() as session:
        session.add(
            Template(
                id="password",
                subject="Your password changed, {{ user.name }}",
                text="Hello {{ user.name }}, your password was changed.",
                html=None,
            )
        )
        session.add(User(id="ann", email="ann@corp.test", name="Ann"))
        prefs = session.get(Preferences, 1)
        assert prefs is not None
        prefs.password_changed_template_id = "password"

    result = sysmail("notify", "password-changed", "ann")
    email_id = int(result.output)
    sysmail("emails", "process", str(email_id))

    [(_, rcpt, raw)] = account.messages
    message = message_from_bytes(raw, policy=policy.default)
    assert rcpt == ["ann@corp.test"]
    assert message["Subject"] == f"Your password changed, Ann [#{email_id}]"
    assert "your password was changed" in raw.decode()
