"""Storing a received message once, however often the server hands it over."""

from __future__ import annotations

import hashlib
import logging

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.inbound.parse import parse_email
from shared.models import Account, Email, EmailStatusChange, EmailTrace, utcnow

log = logging.getLogger(__name__)

_NUL = "\x00"


def store_received(
    session: Session,
    account: Account,
    raw: bytes,
    *,
    folder: str,
    uid: str,
    resync: bool = False,
) -> int | None:
    """Insert a received message as a pending email; None if already stored.

    The same Message-ID on the same account is stored once (the unique index
    decides, so two fetchers racing cannot both insert it). While a folder
    is read again after a UIDVALIDITY change (resync), a message without a
    Message-ID is recognised by its exact content instead.
    """
    try:
        parsed = parse_email(raw)
        message_id = parsed.message_id
        subject, sender = parsed.subject, parsed.from_address
        recipients = list(parsed.to_addresses)
    except Exception as exc:  # the classifier traces it later
        log.warning("account=%s uid=%s headers unreadable: %r", account.id, uid, exc)
        message_id, subject, sender, recipients = None, "", None, []

    if resync and message_id is None and _same_content_stored(session, account, raw):
        log.info(
            "account=%s uid=%s same message stored before, skipped", account.id, uid
        )
        return None

    now = utcnow()
    statement = (
        insert(Email)
        .values(
            account_id=account.id,
            direction="in",
            kind="single",
            status="pending_processing",
            message_id=_clean(message_id, 998),
            subject=_clean(subject, 10_000) or "",
            from_address=_clean(sender, 320),
            to_address=_clean(recipients[0], 320) if recipients else None,
            to_addresses=[_clean(r, 320) for r in recipients],
            raw=raw,
            received_at=now,
            server_folder=folder,
            server_uid=uid,
        )
        .on_conflict_do_nothing(
            index_elements=["account_id", "message_id"],
            index_where=text("direction = 'in' AND message_id IS NOT NULL"),
        )
        .returning(Email.id)
    )
    email_id = session.execute(statement).scalar()
    if email_id is None:
        log.info(
            "account=%s uid=%s message %s already stored, skipped",
            account.id,
            uid,
            message_id,
        )
        return None

    where = f"{account.incoming_protocol} {folder} {uid}"
    session.add(
        EmailStatusChange(
            email_id=email_id,
            at=now,
            from_status=None,
            to_status="pending_processing",
            reason=f"received ({where})",
        )
    )
    session.add(
        EmailTrace(
            email_id=email_id,
            at=now,
            stage="fetcher",
            decision="received",
            detail=f"{where}, Message-ID {message_id or 'missing'}",
        )
    )
    log.info("email=%s account=%s received (%s)", email_id, account.id, where)
    return int(email_id)


def _same_content_stored(session: Session, account: Account, raw: bytes) -> bool:
    found = session.scalar(
        select(Email.id)
        .where(
            Email.account_id == account.id,
            Email.direction == "in",
            Email.message_id.is_(None),
            func.md5(Email.raw) == hashlib.md5(raw).hexdigest(),
            Email.raw == raw,
        )
        .limit(1)
    )
    return found is not None


def _clean(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    return value.replace(_NUL, "")[:limit]
