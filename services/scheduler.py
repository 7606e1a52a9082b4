"""The scheduler: polls mailboxes, releases due mail, starts the archive, and
hands on emails whose queue message was lost.

Every decision to publish is taken by an atomic UPDATE ... RETURNING in
PostgreSQL, so two schedulers running at once release nothing twice.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import text

from shared import outbox
from shared.bus import publish
from shared.db import session_scope
from shared.inbound.sweep import announce_stalled
from shared.messages import ArchiveEmails, FetchMailbox
from shared.models import utcnow
from shared.preferences import get_preferences

log = logging.getLogger(__name__)

ARCHIVE_EVERY = timedelta(days=1)

_ENSURE_POLLS = text(
    """
    INSERT INTO mailbox_polls (account_id, next_poll_at)
    SELECT id, :now FROM accounts
    WHERE active AND incoming_protocol <> 'none'
    ON CONFLICT (account_id) DO NOTHING
    """
)
_CLAIM_POLLS = text(
    """
    UPDATE mailbox_polls AS p
    SET next_poll_at = :now + make_interval(secs => a.poll_interval),
        last_polled_at = :now
    FROM accounts AS a
    WHERE p.account_id = a.id AND a.active AND a.incoming_protocol <> 'none'
      AND p.next_poll_at <= :now
    RETURNING p.account_id
    """
)
_CLAIM_JOB = text(
    """
    INSERT INTO scheduled_jobs (name, next_run_at) VALUES (:name, :now)
    ON CONFLICT (name) DO NOTHING
    """
)
_ADVANCE_JOB = text(
    """
    UPDATE scheduled_jobs SET next_run_at = :next
    WHERE name = :name AND next_run_at <= :now
    RETURNING name
    """
)


@dataclass
class Tick:
    """What one pass of the scheduler published."""

    polled: list[str] = field(default_factory=list)
    released: int = 0
    recovered: int = 0
    announced: int = 0
    archive_started: bool = False


def tick(now: datetime | None = None) -> Tick:
    """One pass: due mailboxes, due outgoing mail, stale claims, the archive."""
    now = now or utcnow()
    done = Tick()

    with session_scope() as session:
        if get_preferences(session).suspended:
            return done
        session.execute(_ENSURE_POLLS, {"now": now})
        done.polled = list(session.execute(_CLAIM_POLLS, {"now": now}).scalars())
        session.execute(_CLAIM_JOB, {"name": "archive", "now": now})
        done.archive_started = (
            session.execute(
                _ADVANCE_JOB,
                {"name": "archive", "now": now, "next": now + ARCHIVE_EVERY},
            ).first()
            is not None
        )
        # Published before the commit: with the broker down the pass fails,
        # and the rollback leaves the mailboxes and the archive due for the
        # next one. A commit lost after publishing only repeats a poll.
        for account_id in done.polled:
            publish(FetchMailbox(account_id=account_id))
        if done.archive_started:
            publish(ArchiveEmails())

    done.recovered = outbox.recover_stale_claims()
    done.released = outbox.release_due()
    done.announced = announce_stalled()
    return done


def run_forever(interval: float, stop: threading.Event) -> None:
    """Tick every interval seconds until stop is set; a failed tick is logged."""
    log.info("scheduler started, one pass every %.1f s", interval)
    failing = False
    while not stop.is_set():
        try:
            done = tick()
        except Exception:
            # Said once while the trouble lasts, not on every pass.
            if not failing:
                log.exception("scheduler pass failed; retrying every pass")
            failing = True
        else:
            if failing:
                log.info("scheduler pass succeeded again")
            failing = False
            if done.polled or done.released or done.recovered or done.announced:
                log.info(
                    "polled %s, released %d, recovered %d, announced %d",
                    ",".join(done.polled) or "-",
                    done.released,
                    done.recovered,
                    done.announced,
                )
        stop.wait(interval)
    log.info("scheduler stopped")
