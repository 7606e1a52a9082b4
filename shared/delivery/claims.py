"""Claiming outgoing emails: a thread takes them before it sends them.

One statement locks a chunk's rows in id order, moves every one that is
still pending, due, of the active account, with processing not suspended,
to ``in_process`` with ``claimed_at`` and one more attempt, writes their
history entries, and returns what sending needs (the message was built when
the email was queued). A duplicate queue message, or a second worker given
an overlapping chunk, waits for the row locks, then finds the status
changed and claims nothing of those. Locking in id order keeps two
claimers from deadlocking.

The hot path runs on the driver's connection as prepared statements:
through SQLAlchemy the same statements cost the sender more CPU than the
database spends on them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Exists, exists, select
from sqlalchemy.orm import Session

from shared import history, outbox
from shared.db import session_scope
from shared.mail.compose import InvalidHeader, build_raw
from shared.models import Account, Attachment, Email, Preferences, utcnow

log = logging.getLogger(__name__)

Driver = psycopg.Connection[Any]


@dataclass(frozen=True)
class Outcome:
    """What became of one email of a SendEmail: a status and why."""

    email_id: int
    status: str
    detail: str


@dataclass(frozen=True)
class Claim:
    """An email this thread holds ``in_process``, with what sending needs."""

    email_id: int
    attempts: int
    account: Account
    envelope_from: str
    recipients: Sequence[str]
    raw: bytes


_PEEK = """
    SELECT e.id, e.account_id, e.status, a.updated_at
    FROM emails e LEFT JOIN accounts a ON a.id = e.account_id
    WHERE e.id = ANY(%(ids)s) AND e.direction = 'out'
"""


def peek(
    db: Driver, email_ids: Sequence[int]
) -> list[tuple[int, str | None, str, datetime | None]]:
    """Id, account, status and account version of outgoing emails."""
    rows = db.execute(_PEEK, {"ids": list(email_ids)}, prepare=True).fetchall()
    return [(row[0], row[1], row[2], row[3]) for row in rows]


# The claim and its history entries in one statement, so one commit. Rows
# are found by primary key alone: with the account among the conditions, a
# generic plan (no statistics yet, right after a large campaign is stored)
# read every email of the account to find a chunk's 25, 15 ms a claim.
_CLAIM = """
    WITH locked AS MATERIALIZED (
        SELECT e.id, e.account_id FROM emails e
        WHERE e.id = ANY(%(ids)s) AND e.direction = 'out'
          AND e.status = 'pending_processing'
          AND (e.scheduled_at IS NULL OR e.scheduled_at <= now())
        ORDER BY e.id
        FOR UPDATE OF e
    ), claimed AS (
        UPDATE emails e
        SET status = 'in_process', claimed_at = now(),
            attempts = e.attempts + 1, updated_at = now()
        FROM locked
        WHERE e.id = locked.id AND e.status = 'pending_processing'
          AND locked.account_id = %(account)s
          AND EXISTS (
              SELECT 1 FROM accounts a WHERE a.id = %(account)s AND a.active
          )
          AND NOT EXISTS (SELECT 1 FROM preferences p WHERE p.suspended)
        RETURNING e.id, e.attempts, e.raw, e.to_addresses, e.cc_addresses
    ), logged AS (
        INSERT INTO email_status_changes (email_id, at, from_status, to_status,
                                          reason)
        SELECT id, now(), 'pending_processing', 'in_process',
               'sending, attempt ' || attempts
        FROM claimed
    )
    SELECT id, attempts, raw, to_addresses, cc_addresses FROM claimed
"""


def claim(
    db: Driver, email_ids: Sequence[int], account: Account
) -> dict[int, Claim | Outcome]:
    """Take the emails for this thread; those missing may not be taken now.

    An email stored without its message (one whose headers could not be
    built at queue time) is built now, or failed with the reason.
    """
    rows = db.execute(
        _CLAIM, {"ids": list(email_ids), "account": account.id}, prepare=True
    ).fetchall()
    claims: dict[int, Claim | Outcome] = {}
    for email_id, attempts, raw, to, cc in rows:
        claims[email_id] = Claim(
            email_id=email_id,
            attempts=attempts,
            account=account,
            envelope_from=account.address,
            recipients=[*to, *cc],
            raw=raw or b"",
        )
    if claims:
        log.info(
            "account=%s emails=%s status pending_processing -> in_process",
            account.id,
            ",".join(str(i) for i in sorted(claims)),
        )
    for email_id, taken in claims.items():
        if isinstance(taken, Claim) and not taken.raw:
            claims[email_id] = _render_claimed(taken)
    return claims


def claimable(manual: bool) -> tuple[str, ...]:
    return ("pending_processing", "failed") if manual else ("pending_processing",)


def claim_by_hand(email_id: int, account: Account) -> Claim | Outcome | None:
    """An operator's claim: also from failed, whatever the schedule."""
    query = (
        select(Email, _has_files())
        .where(Email.id == email_id)
        .where(Email.direction == "out")
        .where(Email.status.in_(claimable(True)))
        .where(
            exists().where(Account.id == Email.account_id).where(Account.active),
            ~exists().where(Preferences.suspended),
        )
        .with_for_update(of=Email, skip_locked=True)
    )
    with session_scope() as session:
        row = session.execute(query).one_or_none()
        if row is None:
            return None
        email, with_files = row
        email.attempts += 1
        email.claimed_at = utcnow()
        history.change_status(
            session,
            email,
            "in_process",
            f"processing now (operator), attempt {email.attempts}",
        )
        try:
            if email.raw is None:
                email.raw = _render(session, email, account, with_files)
        except InvalidHeader as exc:
            history.change_status(session, email, "failed", str(exc))
            email.last_error = str(exc)
            return Outcome(email_id, "failed", str(exc))
        assert email.raw is not None
        return Claim(
            email_id=email.id,
            attempts=email.attempts,
            account=account,
            envelope_from=account.address,
            recipients=[*email.to_addresses, *email.cc_addresses],
            raw=email.raw,
        )


def _has_files() -> Exists:
    return (
        exists()
        .where(Attachment.email_id == Email.id)
        .where(Attachment.dropped_reason.is_(None))
    )


def _render_claimed(taken: Claim) -> Claim | Outcome:
    """Build the message of a claimed email stored without one."""
    with session_scope() as session:
        email = session.get(Email, taken.email_id)
        assert email is not None
        try:
            raw = _render(session, email, taken.account, with_files=True)
        except InvalidHeader as exc:
            unsendable = exc
        else:
            email.raw = raw
            return replace(taken, raw=raw)
    return _fail_unsendable(taken.email_id, unsendable)


def _fail_unsendable(email_id: int, exc: InvalidHeader) -> Outcome:
    """A message that cannot be built is failed for good: a retry is the same."""
    with session_scope() as session:
        email = session.get(Email, email_id)
        assert email is not None
        email.last_error = str(exc)
        history.change_status(session, email, "failed", str(exc))
    return Outcome(email_id, "failed", str(exc))


def _render(
    session: Session, email: Email, account: Account, with_files: bool
) -> bytes:
    """The message as it will be sent, built once so retries send the same."""
    files = []
    if with_files:
        files = list(
            session.scalars(
                select(Attachment)
                .where(Attachment.email_id == email.id)
                .where(Attachment.dropped_reason.is_(None))
                .order_by(Attachment.id)
            )
        )
    composition = outbox.composition(
        email, [(f.filename, f.content_type, f.data or b"") for f in files]
    )
    if account.validates_from or not composition.from_address:
        composition = replace(composition, from_address=account.address)
    return build_raw(composition)
