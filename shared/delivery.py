"""Delivering one outgoing email over SMTP, exactly once if at all possible.

Each delivery is claim, send, record:

1. **Claim.** One ``UPDATE ... WHERE status = 'pending_processing'`` moves
   the email to ``in_process`` with ``claimed_at`` and one more attempt, only
   if it is due, its account active and processing not suspended, and writes
   the history entry in the same statement. A duplicate queue message, or a
   second worker racing for the same email, waits for the row lock, then
   finds the status changed and sends nothing.
2. **Send** over a pooled connection of the account.
3. **Record** ``processed`` (or the failure) and commit at once.

The window. Between the server's final reply to DATA and the commit of step
3 lies one SQL statement, a single round trip to PostgreSQL. If the process
dies inside it (power loss, SIGKILL), the server has the mail but the email
stays ``in_process``; after ``claim_timeout`` the scheduler gives it back to
pending and it is sent a second time. This is the only way an email goes out
twice: at most one email per sender thread of the killed worker. Closing it
would need the server to take part, and SMTP has no idempotency key.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Exists, exists, select, text, update
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
from shared.mail.compose import Composition, InvalidHeader, compose, to_bytes
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
    # A detached copy of the claimed row.
    email: Email
    account: Account
    envelope_from: str
    recipients: Sequence[str]
    raw: bytes

    @property
    def email_id(self) -> int:
        return self.email.id


def deliver(email_id: int, *, manual: bool = False) -> Outcome:
    """Send one email if it is due and nobody else has it.

    ``manual`` is an operator's "process now": it also takes failed emails,
    ignores the schedule, the attempt limit and the account's rate, and
    raises DeliveryRefused instead of quietly leaving the email alone.
    """
    found = _peek(email_id)
    if found is None:
        return _skip(email_id, None, "gone", "no such outgoing email", manual)
    account_id, status, version = found
    if status not in _claimable(manual):
        # The usual duplicate message: already sent or being sent.
        return _skip(email_id, account_id, status, "nothing to do", manual)
    account = _account(account_id, version) if account_id else None
    if account is None or not account.active:
        return _diagnose(email_id, manual)

    # Connected before the rate slot, so the slot is when the server sees it.
    connection, trouble = POOL.take(account, email_id)
    try:
        if not manual and account.rate_limit:
            deferred = _keep_rate(email_id, account)
            if deferred is not None:
                return deferred
        claim = _claim(email_id, account, manual)
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
        return _record_success(claim, accepted)
    except BaseException:
        if connection is not None:
            POOL.discard(connection)
            connection = None
        raise
    finally:
        if connection is not None:
            POOL.give_back(account, connection)


_NO_ACCOUNT = PermanentFailure("the sending account was deleted")


def _claimable(manual: bool) -> tuple[str, ...]:
    return ("pending_processing", "failed") if manual else ("pending_processing",)


# -- before the claim ------------------------------------------------------


_PEEK = text(
    """
    SELECT e.account_id, e.status, a.updated_at
    FROM emails e LEFT JOIN accounts a ON a.id = e.account_id
    WHERE e.id = :id AND e.direction = 'out'
    """
)


def _peek(email_id: int) -> tuple[str | None, str, datetime | None] | None:
    """Account, status and account version of an outgoing email, read
    without a transaction."""
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        row = conn.execute(_PEEK, {"id": email_id}).one_or_none()
    return None if row is None else (row[0], row[1], row[2])


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


def _keep_rate(email_id: int, account: Account) -> Outcome | None:
    """Wait for a slot of the account's rate, or put the email back for later."""
    rate = ratelimit.parse_rate(account.rate_limit or "")
    booking = ratelimit.book(account.id, rate, LONGEST_RATE_WAIT)
    if booking.booked:
        if booking.wait > 0:
            time.sleep(booking.wait)
        return None

    with session_scope() as session:
        email = session.get(Email, email_id)
        if email is not None:
            # Ahead of the scheduler's republishing, so it does not double it.
            email.enqueued_at = utcnow()
    delay = booking.wait + random.uniform(0, rate.window_seconds)
    publish(SendEmail(email_id=email_id), delay_ms=int(delay * 1000))
    log.debug(
        "email=%s account=%s over %s, again in %.1f s",
        email_id,
        account.id,
        rate,
        delay,
    )
    return Outcome(email_id, "pending_processing", f"rate {rate}: later")


# -- claim, send, record ---------------------------------------------------


# Claim and first history entry in one statement. A second worker running it
# for the same email waits for the row lock, then finds the status changed.
_CLAIM = text(
    """
    WITH claimed AS (
        UPDATE emails e
        SET status = 'in_process', claimed_at = now(),
            attempts = e.attempts + 1, updated_at = now()
        WHERE e.id = :id AND e.direction = 'out'
          AND e.status = 'pending_processing'
          AND (e.scheduled_at IS NULL OR e.scheduled_at <= now())
          AND EXISTS (
              SELECT 1 FROM accounts a WHERE a.id = e.account_id AND a.active
          )
          AND NOT EXISTS (SELECT 1 FROM preferences p WHERE p.suspended)
        RETURNING e.*
    ), logged AS (
        INSERT INTO email_status_changes (email_id, at, from_status, to_status,
                                          reason)
        SELECT id, now(), 'pending_processing', 'in_process',
               'sending, attempt ' || attempts
        FROM claimed
    )
    SELECT claimed.*, EXISTS (
        SELECT 1 FROM attachments f
        WHERE f.email_id = claimed.id AND f.dropped_reason IS NULL
    ) AS with_files
    FROM claimed
    """
)
_EMAIL_COLUMNS = frozenset(c.key for c in Email.__table__.columns)


def _claim(email_id: int, account: Account, manual: bool) -> _Claim | Outcome | None:
    """Take the email for this worker, or None when it may not be taken now."""
    if manual:
        return _claim_by_hand(email_id, account)
    with session_scope() as session:
        # Safe without waiting for the disk: WAL is written in order, so the
        # synchronous commit of ``processed`` makes this claim durable too,
        # and a claim lost in a database crash only puts the email back
        # where a taken-back claim would.
        session.execute(text("SET LOCAL synchronous_commit = off"))
        row = session.execute(_CLAIM, {"id": email_id}).one_or_none()
        if row is None:
            return None
        values = row._mapping
        # A detached copy of the row: read, never flushed.
        email = Email(**{k: v for k, v in values.items() if k in _EMAIL_COLUMNS})
        log.info(
            "email=%s account=%s status pending_processing -> in_process: attempt %d",
            email_id,
            account.id,
            email.attempts,
        )
        if email.raw is None:
            try:
                email.raw = _render(session, email, account, values["with_files"])
            except InvalidHeader as exc:
                unsendable: InvalidHeader | None = exc
            else:
                unsendable = None
                session.execute(
                    update(Email).where(Email.id == email_id).values(raw=email.raw)
                )
            if unsendable is not None:
                session.commit()
                return _fail_unsendable(email_id, unsendable)
    return _claimed(email, account)


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
        email=email,
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
    from_address = email.from_address or account.address
    if account.validates_from:
        from_address = account.address
    message = compose(
        Composition(
            message_id=email.message_id or "",
            from_address=from_address,
            from_name=email.from_name or "",
            reply_to=email.reply_to,
            to=email.to_addresses or [email.to_address or ""],
            subject=email.subject,
            text=email.body_text or "",
            html=email.body_html,
            date=email.created_at or utcnow(),
            in_reply_to=email.in_reply_to,
            references=email.references,
            automatic=email.kind in outbox.AUTOMATIC_KINDS,
            headers=email.headers or {},
            attachments=[(f.filename, f.content_type, f.data or b"") for f in files],
        )
    )
    return to_bytes(message)


# The commit that closes the window: the status and its history row in one
# statement, so one round trip to PostgreSQL. It also applies to an email
# whose claim was taken back meanwhile: it was sent, it must not go again.
_PROCESSED = text(
    """
    WITH done AS (
        UPDATE emails
        SET status = 'processed', sent_at = now(), processed_at = now(),
            last_error = NULL, updated_at = now()
        WHERE id = :id AND status IN ('in_process', 'pending_processing')
        RETURNING id, account_id
    )
    INSERT INTO email_status_changes
        (email_id, at, from_status, to_status, reason, smtp_code, server_reply)
    SELECT id, now(), 'in_process', 'processed', :reason, :code, :reply FROM done
    """
)


def _record_success(claim: _Claim, accepted: Accepted) -> Outcome:
    reason = "accepted by the server"
    if accepted.refused:
        reason += "; refused: " + ", ".join(
            f"{address} ({code} {reply})"
            for address, (code, reply) in accepted.refused.items()
        )
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(
            _PROCESSED,
            {
                "id": claim.email_id,
                "reason": reason,
                "code": accepted.code,
                "reply": accepted.reply,
            },
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
        publish(SendEmail(email_id=claim.email_id), delay_ms=int(delay * 1000))
    except Exception as exc:
        # Still pending: the scheduler's release_due picks it up later.
        log.warning(
            "email=%s account=%s retry not queued, broker unreachable: %s",
            claim.email_id,
            claim.account.id,
            exc,
        )
