"""Announcing received emails whose message to the classifier was lost.

The fetcher commits an email before it publishes EmailReceived. When the
broker is down at that moment, or a queued message is lost, the email waits
in pending_processing with nothing to move it on; the scheduler calls
announce_stalled on each pass to hand such emails on again. Announcing twice
is harmless: each stage does nothing for an email it already handled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import text

from shared.db import session_scope
from shared.inbound.fetch import publish_received

log = logging.getLogger(__name__)

# Never announced, and received at least this long ago.
UNANNOUNCED_AFTER = timedelta(minutes=1)
# Announced, yet still pending this long after: the message was lost.
LOST_AFTER = timedelta(minutes=30)

_CLAIM = text(
    """
    UPDATE emails SET enqueued_at = now()
    WHERE id IN (
        SELECT id FROM emails
        WHERE direction = 'in' AND status = 'pending_processing'
          AND ((enqueued_at IS NULL AND received_at < now() - :unannounced)
               OR enqueued_at < now() - :lost)
        ORDER BY id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, account_id
    """
)


def announce_stalled(
    limit: int = 500, announce: Callable[[int], None] = publish_received
) -> int:
    """Hand stalled received emails to the classifier again; how many."""
    with session_scope() as session:
        rows = session.execute(
            _CLAIM,
            {"unannounced": UNANNOUNCED_AFTER, "lost": LOST_AFTER, "limit": limit},
        ).all()

    announced = 0
    for email_id, account_id in sorted(rows):
        try:
            announce(email_id)
        except Exception as exc:
            # The stamp stays; LOST_AFTER brings these back on a later pass.
            log.warning(
                "email=%s account=%s still not announced: %s", email_id, account_id, exc
            )
            break
        log.info("email=%s account=%s announced again", email_id, account_id)
        announced += 1
    return announced
