"""Final processing: removing a processed email from its mail server.

The account's delete_processed option decides: never, always, only when
every processing option failed or was skipped, or only when one succeeded.
The message is found again by where the fetcher recorded it (IMAP folder and
UID, POP3 UIDL); a folder renumbered since (new UIDVALIDITY) is left alone,
because its UIDs may now name other messages.
"""

from __future__ import annotations

import imaplib
import logging
import poplib

from shared.db import session_scope
from shared.errors import DeliveryError
from shared.history import trace
from shared.mail.connect import open_imap, open_pop3
from shared.models import Account, Email, MailboxFolder

log = logging.getLogger(__name__)

STAGE = "responder"


def should_delete(account: Account, succeeded: bool) -> bool:
    """Whether delete_processed asks to remove an email with this outcome."""
    policy = account.delete_processed
    if policy == "always":
        return True
    if policy == "if_none_succeeded":
        return not succeeded
    if policy == "if_any_succeeded":
        return succeeded
    return False


def delete_from_server(email_id: int) -> bool:
    """Remove a processed email's message from the server; True if removed.

    A failure is logged and traced, never raised: the email is processed
    either way, and a message left behind is not fetched a second time.
    """
    with session_scope() as session:
        email = session.get(Email, email_id)
        account = session.get(Account, email.account_id) if email else None
        if email is None or account is None or not email.server_uid:
            return False
        session.expunge(account)
        folder, uid = email.server_folder or "", email.server_uid
        state = session.get(MailboxFolder, (account.id, folder))
        known_validity = state.uidvalidity if state is not None else None

    try:
        if account.incoming_protocol == "imap":
            removed = _delete_imap(account, folder, int(uid), known_validity)
        elif account.incoming_protocol == "pop3":
            removed = _delete_pop3(account, uid)
        else:
            removed = False
    except (DeliveryError, imaplib.IMAP4.error, poplib.error_proto, OSError) as exc:
        log.warning(
            "email=%s account=%s not deleted from the server: %s",
            email_id,
            account.id,
            exc,
        )
        _record(email_id, "not deleted from server", str(exc))
        return False

    detail = f"{folder or 'POP3'} {uid}" if removed else "no longer on the server"
    _record(email_id, "deleted from server" if removed else "not deleted", detail)
    log.info("email=%s account=%s server copy: %s", email_id, account.id, detail)
    return removed


def _delete_imap(
    account: Account, folder: str, uid: int, known_validity: int | None
) -> bool:
    client = open_imap(account)
    try:
        info = client.select_folder(folder)
        if known_validity is None or int(info[b"UIDVALIDITY"]) != known_validity:
            return False
        if not client.search(["UID", str(uid)]):
            return False
        client.add_flags([uid], [b"\\Deleted"])
        if client.has_capability("UIDPLUS"):
            client.uid_expunge([uid])
        else:
            client.expunge()
        return True
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            log.debug("account=%s IMAP logout failed", account.id)


def _delete_pop3(account: Account, uidl: str) -> bool:
    client = open_pop3(account)
    try:
        _, lines, _ = client.uidl()
        for line in lines:
            number, _, found = line.decode("ascii", "replace").partition(" ")
            if found.strip() == uidl:
                client.dele(int(number))
                client.quit()
                return True
        client.quit()
        return False
    except BaseException:
        client.close()
        raise


def _record(email_id: int, decision: str, detail: str) -> None:
    with session_scope() as session:
        email = session.get(Email, email_id)
        if email is not None:
            trace(session, email, STAGE, decision, detail)
