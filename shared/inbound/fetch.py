"""The fetcher's domain: receive an account's new mail, each message once.

Order matters for safety: rows and the mailbox position are committed
together, then the next stage is told, and only then is the message marked
read or deleted on the server. A crash anywhere leaves the message on the
server, and the stored position keeps it from being stored twice.
"""

from __future__ import annotations

import imaplib
import logging
import poplib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from imapclient import IMAPClient
from sqlalchemy import delete, select, text, update

from shared.bus import publish
from shared.db import get_engine, session_scope
from shared.errors import PermanentFailure, TemporaryFailure
from shared.inbound.store import store_received
from shared.mail.connect import incoming_server, open_imap, open_pop3
from shared.messages import EmailReceived
from shared.models import (
    Account,
    Email,
    MailboxFolder,
    Pop3Uidl,
    Preferences,
    utcnow,
)

log = logging.getLogger(__name__)

# Messages fetched per IMAP command and committed per transaction.
IMAP_BATCH = 100
POP3_BATCH = 20

T = TypeVar("T")
Announce = Callable[[int], None]


def publish_received(email_id: int) -> None:
    publish(EmailReceived(email_id=email_id))


def fetch_mailbox(account_id: str, announce: Announce = publish_received) -> list[int]:
    """Receive the account's new mail; returns the ids of the emails stored.

    announce is called with each new email's id once its row is committed
    (by default it hands the email to the classifier). Raises
    TemporaryFailure or PermanentFailure when the server cannot be reached,
    refuses the login or drops the connection; batches committed before
    that stay stored, and the next fetch goes on after them.
    """
    account = _receiving_account(account_id)
    if account is None:
        return []

    with _mailbox_lock(account.id) as locked:
        if not locked:
            log.info("account=%s is being fetched by another worker", account.id)
            return []
        if account.incoming_protocol == "imap":
            return _fetch_imap(account, announce)
        return _fetch_pop3(account, announce)


def _receiving_account(account_id: str) -> Account | None:
    with session_scope() as session:
        account = session.get(Account, account_id)
        preferences = session.get(Preferences, 1)
        if account is None:
            log.warning("account=%s does not exist, nothing fetched", account_id)
            return None
        if preferences is not None and preferences.suspended:
            log.info("account=%s not fetched: processing is suspended", account_id)
            return None
        if not account.active or account.incoming_protocol not in ("imap", "pop3"):
            log.info("account=%s not fetched: inactive or send-only", account_id)
            return None
        session.expunge(account)
        return account


@contextmanager
def _mailbox_lock(account_id: str) -> Iterator[bool]:
    """Hold a PostgreSQL advisory lock so one worker at a time reads a box."""
    key = f"sysmail-fetch:{account_id}"
    with get_engine().connect() as conn:
        locked = bool(
            conn.execute(
                text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": key}
            ).scalar()
        )
        conn.commit()
        try:
            yield locked
        finally:
            if locked:
                conn.execute(
                    text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": key}
                )
                conn.commit()


def _fetch_imap(account: Account, announce: Announce) -> list[int]:
    folder = account.root_folder or "INBOX"
    client = open_imap(account)
    server = "{}:{}".format(*incoming_server(account))
    stored: list[int] = []
    try:
        with _imap_errors(server):
            position = _select(client, account, folder, server)
            uids = [
                uid
                for uid in client.search(["UID", f"{position.last_uid + 1}:*"])
                if uid > position.last_uid
            ]
            log.debug("account=%s %s: %d new messages", account.id, folder, len(uids))
            for batch in _batches(sorted(uids), IMAP_BATCH):
                stored += _store_imap_batch(
                    client, account, folder, position, batch, announce
                )
    finally:
        _logout(client)
    return stored


@dataclass(frozen=True)
class _Position:
    """Where reading a folder starts."""

    uidvalidity: int
    last_uid: int
    # The folder was renumbered since the last fetch: it is read from the start.
    resync: bool


def _select(
    client: IMAPClient, account: Account, folder: str, server: str
) -> _Position:
    """Open the folder and find where the last fetch stopped."""
    try:
        info = client.select_folder(folder)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as exc:
        raise PermanentFailure(f"root folder: {server}: {folder}: {exc}") from exc
    uidvalidity = int(info[b"UIDVALIDITY"])

    with session_scope() as session:
        state = session.get(MailboxFolder, (account.id, folder))
        if state is None:
            return _Position(uidvalidity, 0, resync=False)
        if state.uidvalidity != uidvalidity:
            # The server renumbered the folder: read it all again; Message-IDs
            # keep what is stored already from being stored twice.
            log.warning(
                "account=%s %s: UIDVALIDITY changed %s -> %s, re-syncing",
                account.id,
                folder,
                state.uidvalidity,
                uidvalidity,
            )
            return _Position(uidvalidity, 0, resync=True)
        return _Position(uidvalidity, state.last_uid, resync=False)


def _store_imap_batch(
    client: IMAPClient,
    account: Account,
    folder: str,
    position: _Position,
    uids: list[int],
    announce: Announce,
) -> list[int]:
    data: dict[int, dict[bytes, Any]] = client.fetch(uids, ["BODY.PEEK[]"])

    stored: list[int] = []
    with session_scope() as session:
        for uid in uids:
            raw = data.get(uid, {}).get(b"BODY[]")
            if not isinstance(raw, bytes):
                # Expunged by someone else between SEARCH and FETCH.
                continue
            email_id = store_received(
                session,
                account,
                raw,
                folder=folder,
                uid=str(uid),
                resync=position.resync,
            )
            if email_id is not None:
                stored.append(email_id)
        state = session.get(MailboxFolder, (account.id, folder))
        if state is None:
            state = MailboxFolder(account_id=account.id, folder=folder)
            session.add(state)
        state.uidvalidity = position.uidvalidity
        state.last_uid = max(uids)

    _announce_all(account, stored, announce)
    _after_receive_imap(client, account, uids)
    return stored


def _after_receive_imap(client: IMAPClient, account: Account, uids: list[int]) -> None:
    if account.after_receive == "mark_read":
        client.add_flags(uids, [b"\\Seen"])
    elif account.after_receive == "delete":
        client.add_flags(uids, [b"\\Deleted"])
        # UID EXPUNGE removes only these; plain EXPUNGE would also remove
        # what someone else flagged for deletion.
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
        else:
            client.expunge()
    log.debug(
        "account=%s %d messages %s on the server",
        account.id,
        len(uids),
        account.after_receive,
    )


@contextmanager
def _imap_errors(server: str) -> Iterator[None]:
    try:
        yield
    except (imaplib.IMAP4.abort, OSError) as exc:
        raise TemporaryFailure(f"fetch: {server}: {exc}") from exc
    except imaplib.IMAP4.error as exc:
        raise PermanentFailure(f"fetch: {server}: {exc}") from exc


def _logout(client: IMAPClient) -> None:
    try:
        client.logout()
    except (imaplib.IMAP4.error, OSError):
        log.debug("IMAP logout failed; the connection is dropped anyway")


def _fetch_pop3(account: Account, announce: Announce) -> list[int]:
    client = open_pop3(account)
    server = "{}:{}".format(*incoming_server(account))
    stored: list[int] = []
    try:
        with _pop3_errors(server):
            listing = _uidl(client)
            new = _unknown(account, listing)
            log.debug("account=%s POP3: %d new messages", account.id, len(new))
            for batch in _batches(new, POP3_BATCH):
                stored += _store_pop3_batch(client, account, batch, announce)
            _forget_gone(account, [uidl for _, uidl in listing])
            # Deletions take effect only with a clean QUIT.
            client.quit()
    except BaseException:
        client.close()
        raise
    return stored


def _uidl(client: poplib.POP3) -> list[tuple[int, str]]:
    _, lines, _ = client.uidl()
    listing = []
    for line in lines:
        number, _, uidl = line.decode("ascii", "replace").partition(" ")
        listing.append((int(number), uidl.strip()))
    return listing


def _unknown(account: Account, listing: list[tuple[int, str]]) -> list[tuple[int, str]]:
    with session_scope() as session:
        known = set(
            session.scalars(
                select(Pop3Uidl.uidl).where(Pop3Uidl.account_id == account.id)
            )
        )
    return [(number, uidl) for number, uidl in listing if uidl not in known]


def _store_pop3_batch(
    client: poplib.POP3,
    account: Account,
    batch: list[tuple[int, str]],
    announce: Announce,
) -> list[int]:
    messages = [
        (number, uidl, b"\r\n".join(client.retr(number)[1])) for number, uidl in batch
    ]

    stored: list[int] = []
    with session_scope() as session:
        for _, uidl, raw in messages:
            email_id = store_received(session, account, raw, folder="", uid=uidl)
            if email_id is not None:
                stored.append(email_id)
            session.add(Pop3Uidl(account_id=account.id, uidl=uidl, seen_at=utcnow()))

    _announce_all(account, stored, announce)
    # POP3 has no read flag: delete is the only thing to do on the server.
    if account.after_receive == "delete":
        for number, _, _ in messages:
            client.dele(number)
    return stored


def _forget_gone(account: Account, present: list[str]) -> None:
    """Drop UIDLs of messages the server no longer has, so the table stays small."""
    with session_scope() as session:
        session.execute(
            delete(Pop3Uidl).where(
                Pop3Uidl.account_id == account.id, Pop3Uidl.uidl.not_in(present)
            )
        )


@contextmanager
def _pop3_errors(server: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise TemporaryFailure(f"fetch: {server}: {exc}") from exc
    except poplib.error_proto as exc:
        raise PermanentFailure(f"fetch: {server}: {exc}") from exc


def _announce_all(account: Account, email_ids: list[int], announce: Announce) -> None:
    """Tell the next stage about stored emails and stamp them as announced.

    The rows are committed, so a broker that is down loses nothing: the
    emails stay unstamped and shared.inbound.sweep announces them later.
    """
    announced: list[int] = []
    for email_id in email_ids:
        try:
            announce(email_id)
        except Exception as exc:
            # dramatiq and pika raise many types; each means "not published".
            log.warning(
                "email=%s account=%s not announced, %d left for the sweep: %s",
                email_id,
                account.id,
                len(email_ids) - len(announced),
                exc,
            )
            break
        announced.append(email_id)
    if announced:
        with session_scope() as session:
            session.execute(
                update(Email)
                .where(Email.id.in_(announced))
                .values(enqueued_at=utcnow())
            )


def _batches(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
