"""Sending a chunk: claim, then send and record email by email."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime

from sqlalchemy import update

from config.settings import get_settings
from shared import history, outbox, ratelimit
from shared.bus import publish
from shared.db import driver_autocommit, session_scope
from shared.delivery import claims
from shared.delivery.claims import Claim, Driver, Outcome
from shared.delivery.records import RECORDS, record_failure
from shared.errors import DeliveryError, PermanentFailure, SysmailError
from shared.mail.smtp import POOL, Accepted, ConnectionDropped, Lease, transmit
from shared.messages import SendEmail
from shared.models import Account, Email, utcnow

log = logging.getLogger(__name__)

# A sender thread waits at most this long for a rate-limit slot; beyond it
# the email goes back to the queue, so threads stay free for other accounts.
LONGEST_RATE_WAIT = 10.0
# How long a worker trusts its copy of an account's server settings.
ACCOUNT_SECONDS = 5.0

_NO_ACCOUNT = PermanentFailure("the sending account was deleted")


class DeliveryRefused(SysmailError):
    """An email cannot be sent now as asked (suspended, inactive, status)."""


def deliver(email_id: int, *, manual: bool = False) -> Outcome:
    """Send one email if it is due and nobody else has it.

    ``manual`` is an operator's "process now": it also takes failed emails,
    ignores the schedule, the attempt limit and the account's rate, and
    raises DeliveryRefused instead of quietly leaving the email alone.
    """
    if not manual:
        return deliver_chunk((email_id,))[0]
    with driver_autocommit() as db:
        found = claims.peek(db, (email_id,))
        if not found:
            return _skip(email_id, None, "gone", "no such outgoing email", manual)
        _, account_id, status, version = found[0]
        if status not in claims.claimable(manual):
            return _skip(email_id, account_id, status, "nothing to do", manual)
        account = _account(account_id, version) if account_id else None
        if account is None or not account.active:
            return _diagnose(email_id, manual)
        return _deliver_by_hand(db, email_id, account)


def _deliver_by_hand(db: Driver, email_id: int, account: Account) -> Outcome:
    with POOL.lease(account, email_id) as lease:
        claim = claims.claim_by_hand(email_id, account)
        if claim is None:
            return _diagnose(email_id, True)
        if isinstance(claim, Outcome):
            return claim
        if lease.connection is None:
            assert lease.trouble is not None
            return record_failure(claim, lease.trouble, True)
        result = _send(lease, claim, manual=True)
        if isinstance(result, Outcome):
            return result
        return RECORDS.record(db, [(claim, result)])[email_id]


def deliver_chunk(email_ids: Sequence[int]) -> list[Outcome]:
    """Send each of the emails that is due and nobody else has; one Outcome
    per id, in order."""
    outcomes: dict[int, Outcome] = {}
    with driver_autocommit() as db:
        found = {row[0]: row for row in claims.peek(db, email_ids)}
        by_account: dict[str, list[int]] = {}
        for email_id in email_ids:
            row = found.get(email_id)
            if row is None:
                outcomes[email_id] = _skip(
                    email_id, None, "gone", "no such outgoing email", False
                )
            elif row[2] != "pending_processing":
                # The usual duplicate message: already sent or being sent.
                outcomes[email_id] = _skip(
                    email_id, row[1], row[2], "nothing to do", False
                )
            elif row[1] is None:
                outcomes[email_id] = _diagnose(email_id, False)
            else:
                by_account.setdefault(row[1], []).append(email_id)

        for account_id, ids in by_account.items():
            account = _account(account_id, found[ids[0]][3])
            if account is None or not account.active:
                outcomes.update((i, _diagnose(i, False)) for i in ids)
                continue
            outcomes.update(_deliver_for(db, account, ids))
    return [outcomes[i] for i in email_ids]


def _deliver_for(
    db: Driver, account: Account, email_ids: list[int]
) -> dict[int, Outcome]:
    """Claim, send and record one account's emails over one connection."""
    outcomes: dict[int, Outcome] = {}
    # Connected before the rate slots, so a slot is when the server sees it.
    with POOL.lease(account, email_ids[0]) as lease:
        waits = [0.0] * len(email_ids)
        if account.rate_limit:
            waits, deferred = _keep_rate(email_ids, account)
            outcomes.update(deferred)
            email_ids = email_ids[: len(waits)]
        started = time.monotonic()
        claimed = claims.claim(db, email_ids, account)
        for email_id in email_ids:
            if email_id not in claimed:
                outcomes[email_id] = _diagnose(email_id, False)

        sent = _Unrecorded(db, get_settings().sender_window)
        try:
            for email_id, wait in zip(email_ids, waits, strict=True):
                claim = claimed.get(email_id)
                if claim is None:
                    continue
                if isinstance(claim, Outcome):
                    outcomes[email_id] = claim
                    continue
                if lease.connection is None and lease.trouble is None:
                    # The last one failed mid-send: a fresh connection.
                    lease.connection, lease.trouble = POOL.take(account, email_id)
                if lease.trouble is not None:
                    # Not connecting again for each email of the chunk.
                    outcomes[email_id] = record_failure(claim, lease.trouble, False)
                    continue
                pause = started + wait - time.monotonic()
                if pause > 0:
                    # Nothing sent waits unrecorded through a rate pause.
                    outcomes.update(sent.record())
                    time.sleep(pause)
                with sent.sending():
                    result = _send(lease, claim)
                if isinstance(result, Outcome):
                    outcomes[email_id] = result
                else:
                    outcomes.update(sent.add(claim, result))
                if lease.connection is not None:
                    lease.connection = POOL.renew(account, lease.connection, email_id)
        finally:
            # Also when something unexpected cut the chunk short: what the
            # server accepted is recorded before the error goes on.
            outcomes.update(sent.record())
    return outcomes


def _send(lease: Lease, claim: Claim, *, manual: bool = False) -> Accepted | Outcome:
    """One email over the lease's connection, which is closed on a failure;
    the server's acceptance, for the caller to record, or the failure,
    recorded here.

    A pooled connection the server closed while it was idle is replaced
    once, at no cost of an attempt: the email had not reached the server.
    """
    assert lease.connection is not None
    try:
        try:
            return transmit(
                lease.connection, claim.envelope_from, claim.recipients, claim.raw
            )
        except ConnectionDropped:
            POOL.discard(lease.connection)
            lease.connection, lease.trouble = POOL.take(claim.account, claim.email_id)
            if lease.connection is None:
                assert lease.trouble is not None
                return record_failure(claim, lease.trouble, manual)
            return transmit(
                lease.connection, claim.envelope_from, claim.recipients, claim.raw
            )
    except DeliveryError as exc:
        assert lease.connection is not None
        POOL.discard(lease.connection)
        lease.connection = None
        return record_failure(claim, exc, manual)


class _Unrecorded:
    """A thread's emails the server accepted and whose ``processed`` status
    is not committed yet: at most ``window`` of them, recorded together."""

    def __init__(self, db: Driver, window: int) -> None:
        self._db = db
        self._window = window
        self._sent: list[tuple[Claim, Accepted]] = []

    def sending(self) -> AbstractContextManager[None]:
        """Around a send; a writer of the worker's records waits for it
        when it fills the window, as its record follows at once."""
        if len(self._sent) + 1 < self._window:
            return nullcontext()
        return RECORDS.sending()

    def add(self, claim: Claim, accepted: Accepted) -> dict[int, Outcome]:
        """Keep one more; record them all once the window is full."""
        self._sent.append((claim, accepted))
        if len(self._sent) < self._window:
            return {}
        return self.record()

    def record(self) -> dict[int, Outcome]:
        sent, self._sent = self._sent, []
        return RECORDS.record(self._db, sent)


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
        if email.status not in claims.claimable(manual):
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
    log.info("email=%s account=%s not sent: %s", email_id, account_id, why)
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
