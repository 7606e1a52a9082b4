"""Recording what became of a sent email: the commit that closes the window.

A thread that sent an email waits until its ``processed`` status is
committed before it sends the next one, so at most one email per sender
thread is ever accepted by a server and not yet recorded
(``SYSMAIL_SENDER_WINDOW`` allows a thread more, recorded together). The
threads of a worker share those commits (group commit, as a database does
for its own log): the thread that finds no commit under way waits a moment
(``GATHER_SECONDS``) for the threads still sending, then writes every
record waiting in one statement, and the others wait for it. A thread
alone commits its own at once; under load one statement carries several
emails, and PostgreSQL spends a fraction of a statement on each.

Failures are rare and recorded one by one, through the ORM.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from shared import history, outbox
from shared.bus import publish
from shared.db import session_scope
from shared.delivery.claims import Claim, Driver, Outcome
from shared.errors import DeliveryError, SysmailError, TemporaryFailure
from shared.mail.smtp import Accepted
from shared.messages import SendEmail
from shared.models import Email, utcnow

log = logging.getLogger(__name__)

# How long the thread that writes a group waits for threads still sending.
GATHER_SECONDS = 0.004
# First pause after a temporary failure; it doubles with each attempt.
RETRY_BASE_SECONDS = 30.0
# Kept below outbox.REPUBLISH_AFTER, so the scheduler never beats the retry.
RETRY_MAX_SECONDS = 300.0


class RecordNotWritten(SysmailError):
    """The commit of a sent email's status failed; it stays in_process."""


@dataclass(eq=False)
class _Sent:
    claim: Claim
    reason: str
    code: int
    reply: str
    at: datetime
    done: bool = False
    error: BaseException | None = None


# Status and history of every email of a group in one statement. It also
# applies to an email whose claim was taken back meanwhile: it was sent, it
# must not go again. Every part of the statement sees the rows as they were
# before it, so ``before`` holds the status being left.
_PROCESSED = """
    WITH sent AS (
        SELECT * FROM unnest(%(ids)s::bigint[], %(at)s::timestamptz[],
                             %(reasons)s::text[], %(codes)s::int[],
                             %(replies)s::text[])
            AS s(id, at, reason, code, reply)
    ), before AS (
        SELECT e.id, e.status FROM emails e JOIN sent ON sent.id = e.id
    ), done AS (
        UPDATE emails e
        SET status = 'processed', sent_at = sent.at, processed_at = sent.at,
            last_error = NULL, updated_at = now()
        FROM sent
        WHERE e.id = sent.id AND e.status IN ('in_process', 'pending_processing')
        RETURNING e.id, sent.at, sent.reason, sent.code, sent.reply
    )
    INSERT INTO email_status_changes
        (email_id, at, from_status, to_status, reason, smtp_code, server_reply)
    SELECT done.id, done.at, before.status, 'processed', done.reason, done.code,
           done.reply
    FROM done JOIN before ON before.id = done.id
"""


class GroupCommit:
    """The ``processed`` records of one worker's threads, committed together."""

    def __init__(self) -> None:
        lock = threading.Lock()
        # Threads whose records are in a group being written wait on this;
        # the writer gathering its group waits on the other.
        self._written = threading.Condition(lock)
        self._sent = threading.Condition(lock)
        self._waiting: list[_Sent] = []
        self._writing = False
        self._gathering = False
        # Threads in the middle of a send they will record right after.
        self._sending = 0

    @contextmanager
    def sending(self) -> Iterator[None]:
        """Around a send whose record follows at once, so that a writer
        knows to wait for it."""
        with self._sent:
            self._sending += 1
        try:
            yield
        finally:
            with self._sent:
                self._sending -= 1
                if self._gathering and not self._sending:
                    self._sent.notify()

    def record(
        self, db: Driver, sent: Sequence[tuple[Claim, Accepted]]
    ) -> dict[int, Outcome]:
        """Commit that the server accepted these emails; return once committed.

        ``db`` is the caller's connection, used if this thread writes the
        group. Raises RecordNotWritten when the commit failed.
        """
        entries = [
            _Sent(
                claim,
                _accepted_reason(accepted),
                accepted.code,
                accepted.reply,
                accepted.at,
            )
            for claim, accepted in sent
        ]
        if not entries:
            return {}
        group = self._join(entries)
        if group is not None:
            self._write(db, group)
        failed = next((e.error for e in entries if e.error is not None), None)
        if failed is not None:
            raise RecordNotWritten(
                f"emails {','.join(str(e.claim.email_id) for e in entries)}: "
                f"sent, but their status was not committed: {failed}"
            ) from failed
        for entry in entries:
            log.info(
                "email=%s account=%s status in_process -> processed: %s",
                entry.claim.email_id,
                entry.claim.account.id,
                entry.reason,
            )
        return {
            e.claim.email_id: Outcome(e.claim.email_id, "processed", e.reason)
            for e in entries
        }

    def _join(self, entries: list[_Sent]) -> list[_Sent] | None:
        """Wait while another thread writes; None once it wrote ours, else
        the group this thread is to write (ours among them)."""
        with self._written:
            self._waiting.extend(entries)
            while self._writing and not entries[-1].done:
                self._written.wait()
            if entries[-1].done:
                return None
            self._writing = True
            # As PostgreSQL's commit_delay: a moment for the threads still
            # sending to join, so one commit carries more emails.
            self._gathering = True
            deadline = time.monotonic() + GATHER_SECONDS
            while self._sending and (left := deadline - time.monotonic()) > 0:
                self._sent.wait(left)
            self._gathering = False
            group, self._waiting = self._waiting, []
            return group

    def _write(self, db: Driver, group: list[_Sent]) -> None:
        """One statement for the group; the waiting threads are released
        whatever happens, the error handed to each."""
        error: BaseException | None = None
        try:
            db.execute(
                _PROCESSED,
                {
                    "ids": [s.claim.email_id for s in group],
                    "at": [s.at for s in group],
                    "reasons": [s.reason for s in group],
                    "codes": [s.code for s in group],
                    "replies": [s.reply for s in group],
                },
                prepare=True,
            )
        except BaseException as exc:
            error = exc
            log.error(
                "emails=%s sent, but their status was not committed; they are "
                "sent again once their claims are taken back",
                ",".join(str(s.claim.email_id) for s in group),
                exc_info=True,
            )
        finally:
            with self._written:
                for sent in group:
                    sent.done = True
                    sent.error = error
                self._writing = False
                self._written.notify_all()


RECORDS = GroupCommit()


def _accepted_reason(accepted: Accepted) -> str:
    reason = "accepted by the server"
    if accepted.refused:
        reason += "; refused: " + ", ".join(
            f"{address} ({code} {reply})"
            for address, (code, reply) in accepted.refused.items()
        )
    return reason


def record_failure(claim: Claim, exc: DeliveryError, manual: bool) -> Outcome:
    """Back to pending while attempts remain and the failure is temporary;
    else failed."""
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
        republish(claim, delay)
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


def republish(claim: Claim, delay: float) -> None:
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
