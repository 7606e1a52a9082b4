"""Receiving mail from a real Dovecot: each message stored once, then marked."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage

import pytest
from sqlalchemy import func, select, update

from services.devmail import Dovecot
from shared.crypto import encrypt
from shared.db import session_scope
from shared.errors import PermanentFailure, TemporaryFailure
from shared.inbound.fetch import fetch_mailbox
from shared.inbound.sweep import announce_stalled
from shared.models import (
    Account,
    Email,
    EmailTrace,
    MailboxFolder,
    Pop3Uidl,
    utcnow,
)
from tests.fixtures.mailservers import unique_login

PASSWORD = "mailbox-secret"
MakeAccount = Callable[..., tuple[str, str]]


def message(number: int, message_id: str | None = "default") -> bytes:
    mail = EmailMessage()
    mail["From"] = "Ann Customer <ann@example.org>"
    mail["To"] = "support@example.test"
    mail["Subject"] = f"Question {number}"
    if message_id == "default":
        mail["Message-ID"] = f"<question-{number}@example.org>"
    elif message_id is not None:
        mail["Message-ID"] = message_id
    mail.set_content(f"Hello, this is question {number}.\n")
    return mail.as_bytes()


@pytest.fixture
def make_account(dovecot: Dovecot) -> MakeAccount:
    """An account reading a fresh Dovecot mailbox; returns (account id, login)."""

    def make(
        protocol: str = "imap",
        after_receive: str = "leave",
        root_folder: str = "INBOX",
        encryption: str = "ssl",
    ) -> tuple[str, str]:
        login = unique_login("fetch")
        dovecot.add_user(login, PASSWORD)
        ports = {
            ("imap", "ssl"): dovecot.imaps_port,
            ("imap", "starttls"): dovecot.imap_port,
            ("pop3", "ssl"): dovecot.pop3s_port,
            ("pop3", "starttls"): dovecot.pop3_port,
        }
        with session_scope() as session:
            session.add(
                Account(
                    id=login.split("@")[0],
                    address="support@example.test",
                    incoming_protocol=protocol,
                    incoming_host=dovecot.host,
                    incoming_port=ports[(protocol, encryption)],
                    incoming_encryption=encryption,
                    root_folder=root_folder if protocol == "imap" else None,
                    incoming_username=login,
                    incoming_password=encrypt(PASSWORD),
                    after_receive=after_receive,
                    timeout=20,
                )
            )
        return login.split("@")[0], login

    return make


def stored(account_id: str) -> list[Email]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(Email).where(Email.account_id == account_id).order_by(Email.id)
            )
        )


def test_new_messages_are_stored_once_as_pending_incoming_email(
    dovecot: Dovecot, make_account: MakeAccount
) -> None:
    account_id, login = make_account()
    dovecot.append(login, message(1))
    dovecot.append(login, message(2))
    announced: list[int] = []

    ids = fetch_mailbox(account_id, announced.append)

    emails = stored(account_id)
    assert [e.id for e in emails] == ids == announced
    assert [e.subject for e in emails] == ["Question 1", "Question 2"]
    first = emails[0]
    assert first.direction == "in"
    assert first.status == "pending_processing"
    assert first.message_id == "<question-1@example.org>"
    assert first.from_address == "ann@example.org"
    assert first.to_address == "support@example.test"
    assert first.raw is not None and b"question 1" in first.raw
    assert first.server_folder == "INBOX"
    assert first.received_at is not None


def test_a_second_fetch_stores_only_what_arrived_since(
    dovecot: Dovecot, make_account: MakeAccount
) -> None:
    account_id, login = make_account()
    dovecot.append(login, message(1))
    fetch_mailbox(account_id, lambda _: None)

    assert fetch_mailbox(account_id, lambda _: None) == []
    dovecot.append(login, message(2))
    again = fetch_mailbox(account_id, lambda _: None)

    assert len(again) == 1
    assert [e.subject for e in stored(account_id)] == ["Question 1", "Question 2"]
    with session_scope() as session:
        state = session.get(MailboxFolder, (account_id, "INBOX"))
        assert state is not None and state.last_uid == 2


def test_leave_keeps_messages_unread_on_the_server(
    dovecot: Dovecot, make_account: MakeAccount
) -> None:
    account_id, login = make_account(after_receive="leave")
    dovecot.append(login, message(1))

    fetch_mailbox(account_id, lambda _: None)

    [(_, flags)] = dovecot.list(login)
    assert b"\\Seen" not in flags


def test_mark_read_flags_seen_only_after_the_email_is_stored(
    dovecot: Dovecot, make_account: MakeAccount
) -> None:
    account_id, login = make_account(after_receive="mark_read")
    dovecot.append(login, message(1))
    flags_when_announced: list[tuple[bytes, ...]] = []

    def announce(email_id: int) -> None:
        # The row must be committed and the message still unread by now.
        assert any(e.id == email_id for e in stored(account_id))
        flags_when_announced.extend(flags for _, flags in dovecot.list(login))

    fetch_mailbox(account_id, announce)

    assert flags_when_announced and b"\\Seen" not in flags_when_announced[0]
    [(_, flags)] = dovecot.list(login)
    assert b"\\Seen" in flags


def test_delete_removes_fetched_messages_from_the_server(
    dovecot: Dovecot, make_account: MakeAccount
) -> None:
    account_id, login = make_account(after_receive="delete")
    dovecot.append(login, message(1))
    dovecot.append(login, message(2))

    fetch_mailbox(account_id, lambda _: None)

    assert dovecot.list(login) == []
    assert len(stored(account_id)) == 2


def test_a_message_that_cannot_be_stored_stays_untouched_on_the_server(
    dovecot: Dovecot, make_account: MakeAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id, login = make_account(after_receive="delete")
    dovecot.append(login, message(1))

    def database_fails(*args: object, **kwargs: object) -> int:
        raise RuntimeError("database went away")

    monkeypatch.setattr("shared.inbound.fetch.store_received", database_fails)
    with pytest.raises(RuntimeError):
        fetch_mailbox(account_id, lambda _: None)
    monkeypatch.undo()

    [(_, flags)] = dovecot.list(login)
    assert b"\\Deleted" not in flags
    assert len(fetch_mailbox(account_id, lambda _: None)) == 1


def test_with_the_broker_down_mail_is_stored_marked_and_announced_later(
    dovecot: Dovecot, make_account: MakeAccount
) -> None:
    account_id, login = make_account(after_receive="mark_read")
    dovecot.append(login, message(1))

    def broker_down(email_id: int) -> None:
        raise ConnectionError("broker unreachable")

    [email_id] = fetch_mailbox(account_id, broker_down)
    [(_, flags)] = dovecot.list(login)
    assert b"\\Seen" in flags
    with session_scope() as session:
        session.execute(
            update(Email)
            .where(Email.id == email_id)
            .values(received_at=utcnow() - timedelta(minutes=5))
        )
    announced: list[int] = []

    assert announce_stalled(announce=announced.append) == 1
    assert announced == [email_id]
    assert announce_stalled(announce=announced.append) == 0


def test_uidvalidity_change_resyncs_without_storing_anything_twice(
    dovecot: Dovecot, make_account: MakeAccount
) -> None:
    account_id, login = make_account(root_folder="Support")
    dovecot.append(login, message(1), folder="Support")
    dovecot.append(login, message(2), folder="Support")
    dovecot.append(login, message(4, message_id=None), folder="Support")
    fetch_mailbox(account_id, lambda _: None)
    with session_scope() as session:
        before = session.get(MailboxFolder, (account_id, "Support"))
        assert before is not None
        old_validity = before.uidvalidity

    with dovecot.imap(login) as client:
        client.delete_folder("Support")
    dovecot.append(login, message(2), folder="Support")
    dovecot.append(login, message(3), folder="Support")
    dovecot.append(login, message(4, message_id=None), folder="Support")
    dovecot.append(login, message(1), folder="Support")
    fetch_mailbox(account_id, lambda _: None)

    assert [e.subject for e in stored(account_id)] == [
        "Question 1",
        "Question 2",
        "Question 4",
        "Question 3",
    ]
    with session_scope() as session:
        after = session.get(MailboxFolder, (account_id, "Support"))
        assert after is not None
        assert after.uidvalidity != old_validity
        assert after.last_uid == 4


def test_mail_without_message_id_is_stored_and_traced(
    dovecot: Dovecot, make_account: MakeAccount
) -> None:
    account_id, login = make_account()
    dovecot.append(login, message(1, message_id=None))
    dovecot.append(login, message(2, message_id=None))

    fetch_mailbox(account_id, lambda _: None)

    emails = stored(account_id)
    assert [e.message_id for e in emails] == [None, None]
    with session_scope() as session:
        details = session.scalars(
            select(EmailTrace.detail).where(EmailTrace.email_id == emails[0].id)
        ).all()
    assert any("Message-ID missing" in d for d in details)


def test_missing_root_folder_is_a_permanent_failure_naming_the_folder(
    make_account: MakeAccount,
) -> None:
    account_id, _ = make_account(root_folder="NoSuchFolder")

    with pytest.raises(PermanentFailure, match=r"root folder.*NoSuchFolder"):
        fetch_mailbox(account_id, lambda _: None)


def test_a_server_that_is_down_is_a_temporary_failure(
    make_account: MakeAccount,
) -> None:
    account_id, _ = make_account()
    with session_scope() as session:
        account = session.get(Account, account_id)
        assert account is not None
        account.incoming_port = 1

    with pytest.raises(TemporaryFailure):
        fetch_mailbox(account_id, lambda _: None)
    assert stored(account_id) == []


def test_inactive_account_is_not_fetched(
    dovecot: Dovecot, make_account: MakeAccount
) -> None:
    account_id, login = make_account()
    dovecot.append(login, message(1))
    with session_scope() as session:
        account = session.get(Account, account_id)
        assert account is not None
        account.active = False

    assert fetch_mailbox(account_id, lambda _: None) == []
    assert stored(account_id) == []


def test_pop3_receives_each_message_once_by_its_uidl(
    dovecot: Dovecot, make_account: MakeAccount
) -> None:
    account_id, login = make_account(protocol="pop3", after_receive="leave")
    dovecot.append(login, message(1))
    dovecot.append(login, message(2))

    first = fetch_mailbox(account_id, lambda _: None)
    second = fetch_mailbox(account_id, lambda _: None)
    dovecot.append(login, message(3))
    third = fetch_mailbox(account_id, lambda _: None)

    assert (len(first), second, len(third)) == (2, [], 1)
    assert [e.subject for e in stored(account_id)] == [
        "Question 1",
        "Question 2",
        "Question 3",
    ]
    assert len(dovecot.list(login)) == 3
    with session_scope() as session:
        known = session.scalar(
            select(func.count()).where(Pop3Uidl.account_id == account_id)
        )
    assert known == 3


def test_pop3_delete_removes_messages_after_storing_them(
    dovecot: Dovecot, make_account: MakeAccount
) -> None:
    account_id, login = make_account(
        protocol="pop3", after_receive="delete", encryption="starttls"
    )
    dovecot.append(login, message(1))
    dovecot.append(login, message(2))

    fetch_mailbox(account_id, lambda _: None)

    assert dovecot.list(login) == []
    assert len(stored(account_id)) == 2
    with session_scope() as session:
        known = session.scalar(
            select(func.count()).where(Pop3Uidl.account_id == account_id)
        )
    # The next fetch forgets UIDLs of messages the server no longer holds.
    fetch_mailbox(account_id, lambda _: None)
    with session_scope() as session:
        remaining = session.scalar(
            select(func.count()).where(Pop3Uidl.account_id == account_id)
        )
    assert (known, remaining) == (2, 0)


def test_imap_with_starttls_receives_mail(
    dovecot: Dovecot, make_account: MakeAccount
) -> None:
    account_id, login = make_account(encryption="starttls")
    dovecot.append(login, message(1))

    assert len(fetch_mailbox(account_id, lambda _: None)) == 1
