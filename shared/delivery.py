"""Delivering outgoing email over SMTP, exactly once if at all possible.

A SendEmail carries a chunk of one account's emails. Each chunk is claim,
then send and record email by email:

1. **Claim.** One statement locks the chunk's rows in id order, moves every
   one that is still pending, due, of an active account, with processing
   not suspended, to ``in_process`` with ``claimed_at`` and one more
   attempt, writes their history entries, and returns what sending needs
   (the raw message is built at queue time). A duplicate queue message, or
   a second worker given an overlapping chunk, waits for the row locks,
   then finds the status changed and sends nothing of those. Locking in id
   order keeps two claimers from deadlocking.
2. **Send** each over the thread's pooled connection of the account.
3. **Record** ``processed`` (or the failure) right after the server's reply,
   one statement in autocommit, before the next email is sent.

The window. Between the server's final reply to DATA and the commit of step
3 lies one SQL statement, a single round trip to PostgreSQL. If the process
dies inside it (power loss, SIGKILL), the server has the mail but the email
stays ``in_process``; after ``claim_timeout`` the scheduler gives it back to
pending and it is sent a second time. This is the only way an email goes out
twice: at most one email per sender thread of the killed worker. Closing it
would need the server to take part, and SMTP has no idempotency key. The
rest of a killed worker's claimed chunk was never sent; it goes back the same
way and is sent once. So does the rest of a chunk cut short by an unexpected
error (the database gone, say): dramatiq's retry of the chunk finds those
emails ``in_process`` and leaves them to the scheduler.

Durability. The claim commits with ``synchronous_commit = off``: should
PostgreSQL itself crash, a lost claim only returns emails to pending, as a
taken-back claim would, and WAL is written in order, so the synchronous
commit of a later ``processed`` makes the claim durable too. ``processed``
itself commits synchronously: losing it would send an email again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime

import psycopg
from sqlalchemy import Connection, Exists, exists, select, text, update
from sqlalchemy.orm import Session

from shared import history, outbox, ratelimit
from shared.bus import publish
from shared.db import get_engine, session_scope
from shared.errors import (
    DeliveryError,
    PermanentFailure,
    SysmailError,
    TemporaryFailure,
)
from shared.mail.compose import InvalidHeader, build_raw
from shared.mail.smtp import POOL, Accepted, transmit
from shared.messages import SendEmail
from shared.models import Account, Attachment, Email, Preferences, utcnow

log = logging.getLogger(__name__)

# First pause after a temporary failure; it doubles with each attempt.
RETRY_BASE_SECONDS = 30.0
# Kept below outbox.REPUBLISH_AFTER, so the scheduler never beats the retry.
RETRY_MAX_SECONDS = 300.0
# A sender thread waits at most this long for a rate-limit slot; beyond it
# the email goes back to the queue, so threads stay free for other accounts.
LONGEST_RATE_WAIT = 10.0
# How long a worker trusts its copy of an account's server settings.
ACCOUNT_SECONDS = 5.0


class DeliveryRefused(SysmailError):
    """An email cannot be sent now as asked (suspended, inactive, status)."""


@dataclass(frozen=True)
class Outcome:
    """What became of one SendEmail: a status and why, for logs and the CLI."""

    email_id: int
    status: str
    detail: str


@dataclass(frozen=True)
class _Claim:
    email_id: int
    attempts: int
    account: Account
    envelope_from: str
    recipients: Sequence[str]
    raw: bytes


def deliver(email_id: int, *, manual: bool = False) -> Outcome:
    """Send one email if it is due and nobody else has it.

    ``manual`` is an operator's "process now": it also takes failed emails,
    ignores the schedule, the attempt limit and the account's rate, and
    raises DeliveryRefused instead of quietly leaving the email alone.
    """
    if not manual:
        return deliver_chunk((email_id,))[0]
    found = _peek((email_id,))
    if not found:
        return _skip(email_id, None, "gone", "no such outgoing email", manual)
    _, account_id, status, version = found[0]
    if status not in _claimable(manual):
        return _skip(email_id, account_id, status, "nothing to do", manual)
    account = _account(account_id, version) if account_id else None
    if account is None or not account.active:
        return _diagnose(email_id, manual)

    connection, trouble = POOL.take(account, email_id)
    try:
        claim = _claim_by_hand(email_id, account)
        if claim is None:
            return _diagnose(email_id, manual)
        if isinstance(claim, Outcome):
            return claim
        if connection is None:
            assert trouble is not None
            return _record_failure(claim, trouble, manual)
        try:
            accepted = transmit(
                connection, claim.envelope_from, claim.recipients, claim.raw
            )
        except DeliveryError as exc:
            POOL.discard(connection)
            connection = None
            return _record_failure(claim, exc, manual)
        with _autocommit() as db:
            return _record_success(db, claim, accepted)
    except BaseException:
        if connection is not None:
            POOL.discard(connection)
            connection = None
        raise
    finally:
        if connection is not None:
            POOL.give_back(account, connection)


def deliver_chunk(email_ids: Sequence[int]) -> list[Outcome]:
    """Send each of the emails that is due and nobody else has; one Outcome
    per id, in order."""
    outcomes: dict[int, Outcome] = {}
    found = {row[0]: row for row in _peek(email_ids)}
    by_account: dict[str, list[int]] = {}
    for email_id in email_ids:
        row = found.get(email_id)
        if row is None:
            outcomes[email_id] = _skip(
                email_id, None, "gone", "no such outgoing email", False
            )
        elif row[2] != "pending_processing":
            # The usual duplicate message: already sent or being sent.
            outcomes[email_id] = _skip(email_id, row[1], row[2], "nothing to do", False)
        elif row[1] is None:
            outcomes[email_id] = _diagnose(email_id, False)
        else:
            by_account.setdefault(row[1], []).append(email_id)

    for account_id, ids in by_account.items():
        account = _account(account_id, found[ids[0]][3])
        if account is None or not account.active:
            outcomes.update((i, _diagnose(i, False)) for i in ids)
            continue
        outcomes.update(_deliver_for(account, ids))
    return [outcomes[i] for i in email_ids]


def _deliver_for(account: Account, email_ids: list[int]) -> dict[int, Outcome]:
    """Claim, send and record one account's emails over one connection."""
    outcomes: dict[int, Outcome] = {}
    # Connected before the rate slots, so a slot is when the server sees it.
    connection, trouble = POOL.take(account, email_ids[0])
    try:
        waits = [0.0] * len(email_ids)
        if account.rate_limit:
            waits, deferred = _keep_rate(email_ids, account)
            outcomes.update(deferred)
            email_ids = email_ids[: len(waits)]
        started = time.monotonic()
        claims = _claim(email_ids, account)
        for email_id in email_ids:
            if email_id not in claims:
                outcomes[email_id] = _diagnose(email_id, False)

        with _autocommit() as db:
            for email_id, wait in zip(email_ids, waits, strict=True):
                claim = claims.get(email_id)
                if claim is None:
                    continue
                if isinstance(claim, Outcome):
                    outcomes[email_id] = claim
                    continue
                if connection is None and trouble is None:
                    # The last one failed mid-send: a fresh connection.
                    connection, trouble = POOL.take(account, email_id)
                if connection is None:
                    # Not connecting again for each email of the chunk.
                    assert trouble is not None
                    outcomes[email_id] = _record_failure(claim, trouble, False)
                    continue
                pause = started + wait - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                try:
                    accepted = transmit(
                        connection, claim.envelope_from, claim.recipients, claim.raw
                    )
                except DeliveryError as exc:
                    POOL.discard(connection)
                    connection = None
                    outcomes[email_id] = _record_failure(claim, exc, False)
                    continue
                outcomes[email_id] = _record_success(db, claim, accepted)
                connection = POOL.renew(account, connection, email_id)
    except BaseException:
        if connection is not None:
            POOL.discard(connection)
            connection = None
        raise
    finally:
        if connection is not None:
            POOL.give_back(account, connection)
    return outcomes


@contextmanager
def _autocommit() -> Iterator[Connection]:
    """A database connection of its own, each statement its own commit."""
    engine = get_engine()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        yield conn


_NO_ACCOUNT = PermanentFailure("the sending account was deleted")


def _claimable(manual: bool) -> tuple[str, ...]:
    return ("pending_processing", "failed") if manual else ("pending_processing",)


# -- before the claim ------------------------------------------------------


_PEEK = text(
    """
    SELECT e.id, e.account_id, e.status, a.updated_at
    FROM emails e LEFT JOIN accounts a ON a.id = e.account_id
    WHERE e.id = ANY(:ids) AND e.direction = 'out'
    """
)


def _peek(
    email_ids: Sequence[int],
) -> list[tuple[int, str | None, str, datetime | None]]:
    """Id, account, status and account version of outgoing emails, read
    without a transaction."""
    with _autocommit() as conn:
        rows = conn.execute(_PEEK, {"ids": list(email_ids)}).all()
    return [(row[0], row[1], row[2], row[3]) for row in rows]


_accounts: dict[str, tuple[float, datetime | None, Account]] = {}
_accounts_lock = threading.Lock()


def _account(account_id: str, version: datetime | None) -> Account | None:
    """The account, read again when it changed or every ACCOUNT_SECONDS.

    Whether it is active is checked by the claim itself, never from here.
    """
    now = time.monotonic()
    with _accounts_lock:
        hit = _accounts.get(account_id)
    if hit is not None and hit[1] == version and now - hit[0] < ACCOUNT_SECONDS:
        return hit[2]
    with session_scope() as session:
        account = session.get(Account, account_id)
    if account is not None:
        with _accounts_lock:
            _accounts[account_id] = (now, account.updated_at, account)
    return account


def _diagnose(email_id: int, manual: bool) -> Outcome:
    """Why an email was not claimed; an email whose account is gone fails."""
    with session_scope() as session:
        email = session.get(Email, email_id)
        if email is None or email.direction != "out":
            return _skip(email_id, None, "gone", "no such outgoing email", manual)
        account = session.get(Account, email.account_id) if email.account_id else None
        if email.status not in _claimable(manual):
            return _skip(
                email_id, email.account_id, email.status, "nothing to do", manual
            )

        if outbox.preferences(session).suspended:
            # No attempt is counted; the scheduler releases it after resume.
            email.enqueued_at = None
            return _skip(
                email_id,
                email.account_id,
                email.status,
                "processing is suspended",
                manual,
            )
        if account is None:
            history.change_status(session, email, "failed", str(_NO_ACCOUNT))
            email.last_error = str(_NO_ACCOUNT)
            return Outcome(email_id, "failed", str(_NO_ACCOUNT))
        if not account.active:
            email.enqueued_at = None
            return _skip(
                email_id,
                email.account_id,
                email.status,
                "the account is inactive",
                manual,
            )
    return _skip(
        email_id, email.account_id, "-", "claimed elsewhere or not due", manual
    )


def _skip(
    email_id: int, account_id: str | None, status: str, why: str, manual: bool
) -> Outcome:
    if manual:
        raise DeliveryRefused(f"email {email_id} is not sent: {why} ({status})")
    log.info(
        "email=%s account=%s not sent: %s",
        email_id,
        account_id,
        why,
    )
    return Outcome(email_id, status, why)


def _keep_rate(
    email_ids: list[int], account: Account
) -> tuple[list[float], dict[int, Outcome]]:
    """Book the account's slots for the emails, in one call to Redis.

    Returns the wait before each email that got a slot (the first ones) and
    the outcome of the rest, put back on the queue for later.
    """
    rate = ratelimit.parse_rate(account.rate_limit or "")
    bookings = ratelimit.book_many(account.id, rate, LONGEST_RATE_WAIT, len(email_ids))
    waits = [b.wait for b in bookings if b.booked]
    later = email_ids[len(waits) :]
    if not later:
        return waits, {}

    with session_scope() as session:
        # Ahead of the scheduler's republishing, so it does not double it.
        session.execute(
            update(Email).where(Email.id.in_(later)).values(enqueued_at=utcnow())
        )
    wait = bookings[-1].wait if bookings else 0.0
    delay = wait + random.uniform(0, rate.window_seconds)
    publish(SendEmail(email_ids=tuple(later)), delay_ms=int(delay * 1000))
    for email_id in later:
        log.debug(
            "email=%s account=%s over %s, again in %.1f s",
            email_id,
            account.id,
            rate,
            delay,
        )
    outcome = f"rate {rate}: later"
    return waits, {i: Outcome(i, "pending_processing", outcome) for i in later}


# -- claim, send, record ---------------------------------------------------


# Claim and first history entries in one statement. The rows are locked in
# id order first: two workers given overlapping chunks then queue up on the
# same first row instead of deadlocking, and the second finds it claimed.
_CLAIM = text(
    """
    WITH locked AS (
        SELECT e.id FROM emails e
        WHERE e.id = ANY(:ids) AND e.direction = 'out'
          AND e.status = 'pending_processing'
          AND (e.scheduled_at IS NULL OR e.scheduled_at <= now())
          AND EXISTS (
              SELECT 1 FROM accounts a WHERE a.id = e.account_id AND a.active
          )
          AND NOT EXISTS (SELECT 1 FROM preferences p WHERE p.suspended)
        ORDER BY e.id
        FOR UPDATE OF e
    ), claimed AS (
        UPDATE emails e
        SET status = 'in_process', claimed_at = now(),
            attempts = e.attempts + 1, updated_at = now()
        FROM locked
        WHERE e.id = locked.id AND e.status = 'pending_processing'
        RETURNING e.id, e.attempts, e.raw, e.to_addresses, e.cc_addresses
    ), logged AS (
        INSERT INTO email_status_changes (email_id, at, from_status, to_status,
                                          reason)
        SELECT id, now(), 'pending_processing', 'in_process',
               'sending, attempt ' || attempts
        FROM claimed
    )
    SELECT claimed.id, claimed.attempts, claimed.raw, claimed.to_addresses,
           claimed.cc_addresses
    FROM claimed
    """
)


def _claim(email_ids: list[int], account: Account) -> dict[int, _Claim | Outcome]:
    """Take the emails for this worker; those missing may not be taken now."""
    claims: dict[int, _Claim | Outcome] = {}
    with session_scope() as session:
        # See the module's docstring: safe without waiting for the disk.
        session.execute(text("SET LOCAL synchronous_commit = off"))
        rows = session.execute(_CLAIM, {"ids": email_ids}).all()
        for email_id, attempts, raw, to, cc in rows:
            log.info(
                "email=%s account=%s status pending_processing -> in_process: "
                "attempt %d",
                email_id,
                account.id,
                attempts,
            )
            claims[email_id] = _Claim(
                email_id=email_id,
                attempts=attempts,
                account=account,
                envelope_from=account.address,
                recipients=[*to, *cc],
                raw=raw or b"",
            )
    for email_id, claim in claims.items():
        if isinstance(claim, _Claim) and not claim.raw:
            claims[email_id] = _render_claimed(claim)
    return claims


def _render_claimed(claim: _Claim) -> _Claim | Outcome:
    """Build the message of a claimed email stored without one."""
    with session_scope() as session:
        email = session.get(Email, claim.email_id)
        assert email is not None
        try:
            raw = _render(session, email, claim.account, with_files=True)
        except InvalidHeader as exc:
            unsendable = exc
        else:
            email.raw = raw
            return replace(claim, raw=raw)
    return _fail_unsendable(claim.email_id, unsendable)


def _claim_by_hand(email_id: int, account: Account) -> _Claim | Outcome | None:
    """An operator's claim: also from failed, whatever the schedule."""
    query = (
        select(Email, _has_files())
        .where(Email.id == email_id)
        .where(Email.direction == "out")
        .where(Email.status.in_(_claimable(True)))
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
    return _claimed(email, account)


def _has_files() -> Exists:
    return (
        exists()
        .where(Attachment.email_id == Email.id)
        .where(Attachment.dropped_reason.is_(None))
    )


def _claimed(email: Email, account: Account) -> _Claim:
    assert email.raw is not None
    return _Claim(
        email_id=email.id,
        attempts=email.attempts,
        account=account,
        envelope_from=account.address,
        recipients=[*email.to_addresses, *email.cc_addresses],
        raw=email.raw,
    )


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


# The commit that closes the window: the status and its history row in one
# statement, so one round trip to PostgreSQL. It also applies to an email
# whose claim was taken back meanwhile: it was sent, it must not go again.
# Run on the driver's connection as a prepared statement: through
# SQLAlchemy it cost a third of the sender's CPU per email.
_PROCESSED = """
    WITH done AS (
        UPDATE emails
        SET status = 'processed', sent_at = now(), processed_at = now(),
            last_error = NULL, updated_at = now()
        WHERE id = %(id)s AND status IN ('in_process', 'pending_processing')
        RETURNING id, account_id
    )
    INSERT INTO email_status_changes
        (email_id, at, from_status, to_status, reason, smtp_code, server_reply)
    SELECT id, now(), 'in_process', 'processed', %(reason)s, %(code)s, %(reply)s
    FROM done
"""


def _record_success(db: Connection, claim: _Claim, accepted: Accepted) -> Outcome:
    reason = "accepted by the server"
    if accepted.refused:
        reason += "; refused: " + ", ".join(
            f"{address} ({code} {reply})"
            for address, (code, reply) in accepted.refused.items()
        )
    driver = db.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    driver.execute(
        _PROCESSED,
        {
            "id": claim.email_id,
            "reason": reason,
            "code": accepted.code,
            "reply": accepted.reply,
        },
        prepare=True,
    )
    log.info(
        "email=%s account=%s status in_process -> processed: %s",
        claim.email_id,
        claim.account.id,
        reason,
    )
    return Outcome(claim.email_id, "processed", reason)


def _record_failure(claim: _Claim, exc: DeliveryError, manual: bool) -> Outcome:
    temporary = isinstance(exc, TemporaryFailure)
    with session_scope() as session:
        email = session.get(Email, claim.email_id)
        assert email is not None
        allowed = outbox.preferences(session).resend_attempts + 1
        again = temporary and email.attempts < allowed
        email.last_error = str(exc)
        email.claimed_at = None
        if again:
            reason = f"temporary failure, attempt {email.attempts} of {allowed}"
            email.enqueued_at = utcnow()
        elif temporary:
            reason = f"temporary failure, all {allowed} attempts used"
        else:
            reason = "critical failure"
        history.change_status(
            session,
            email,
            "pending_processing" if again else "failed",
            f"{reason}: {exc}",
            smtp_code=exc.code,
            server_reply=exc.reply,
        )
        attempts = email.attempts

    if again:
        delay = min(RETRY_BASE_SECONDS * 2 ** (attempts - 1), RETRY_MAX_SECONDS)
        _republish(claim, delay)
        return Outcome(claim.email_id, "pending_processing", str(exc))
    if not manual:
        log.warning(
            "email=%s account=%s failed after %d attempts: %s",
            claim.email_id,
            claim.account.id,
            attempts,
            exc,
        )
    return Outcome(claim.email_id, "failed", str(exc))


def _republish(claim: _Claim, delay: float) -> None:
    try:
        publish(SendEmail(email_ids=(claim.email_id,)), delay_ms=int(delay * 1000))
    except Exception as exc:
        # Still pending: the scheduler's release_due picks it up later.
        log.warning(
            "email=%s account=%s retry not queued, broker unreachable: %s",
            claim.email_id,
            claim.account.id,
            exc,
        )
