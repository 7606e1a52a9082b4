"""Status changes and processing trace: every decision about an email, kept."""

from __future__ import annotations

import logging

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.models import Email, EmailStatusChange, EmailTrace, OutboxEntry, utcnow

log = logging.getLogger(__name__)


def change_status(
    session: Session,
    email: Email,
    status: str,
    reason: str,
    *,
    smtp_code: int | None = None,
    server_reply: str | None = None,
) -> None:
    """Move an email to a status and record when, why and what the server said."""
    previous = email.status
    email.status = status
    if status == "processed":
        email.processed_at = utcnow()
    if status == "pending_processing" and email.direction == "out":
        # Back in the outbox (a retry), where the scheduler looks for it;
        # an email still in flight is there already.
        session.execute(
            insert(OutboxEntry)
            .values(email_id=email.id)
            .on_conflict_do_nothing(index_elements=["email_id"])
        )
    session.add(
        EmailStatusChange(
            email_id=email.id,
            at=utcnow(),
            from_status=previous,
            to_status=status,
            reason=reason,
            smtp_code=smtp_code,
            server_reply=server_reply,
        )
    )
    log.info(
        "email=%s account=%s status %s -> %s: %s",
        email.id,
        email.account_id,
        previous,
        status,
        reason,
    )


def trace(
    session: Session, email: Email, stage: str, decision: str, detail: str = ""
) -> None:
    """Record what a stage decided about an email and why."""
    session.add(
        EmailTrace(
            email_id=email.id,
            at=utcnow(),
            stage=stage,
            decision=decision,
            detail=detail,
        )
    )
