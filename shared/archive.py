"""Archiving: old processed mail leaves the working lists, and can come back.

Archived is a flag beside the status, so an archived email keeps its
history and stays searchable; failed mail is never archived by age, since
someone still has to look at it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from shared.errors import NotFound, SysmailError
from shared.models import Email, EmailTrace, Preferences, utcnow

log = logging.getLogger(__name__)

STAGE = "archiver"
# Mail on its way cannot be archived: it would leave the lists mid-flight.
IN_FLIGHT = ("pending_processing", "in_process")


class ArchiveError(SysmailError):
    """An email cannot be archived or restored as asked; nothing changed."""


def months_before(moment: datetime, months: int) -> datetime:
    """The same day and time ``months`` calendar months earlier.

    A day the earlier month lacks (31 March minus one month) becomes its
    last day.
    """
    total = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(total, 12)
    month += 1
    day = moment.day
    while True:
        try:
            return moment.replace(year=year, month=month, day=day)
        except ValueError:
            day -= 1


def archive_old(session: Session, now: datetime | None = None) -> int:
    """Archive processed mail older than the preferences say; returns how many.

    Does nothing while the preference is unset (``none``).
    """
    now = now or utcnow()
    preferences = session.get(Preferences, 1)
    if preferences is None or preferences.archive_after_months is None:
        log.info("archiving by age is off in the preferences")
        return 0
    months = preferences.archive_after_months
    cutoff = months_before(now, months)

    rows = session.execute(
        update(Email)
        .where(
            Email.status == "processed",
            Email.archived.is_(False),
            func.coalesce(Email.sent_at, Email.received_at, Email.created_at) < cutoff,
        )
        .values(archived=True)
        .returning(Email.id, Email.account_id)
    ).all()
    _record(session, rows, "archived", f"older than {months} months")
    return len(rows)


def archive(session: Session, email_ids: Sequence[int]) -> list[int]:
    """Archive the chosen emails; those already archived are left as they are.

    Raises NotFound or ArchiveError, having changed nothing, when an id does
    not exist or names mail still on its way.
    """
    emails = _load(session, email_ids)
    busy = [e.id for e in emails if e.status in IN_FLIGHT]
    if busy:
        raise ArchiveError(
            "still being processed, cannot archive: " + ", ".join(str(i) for i in busy)
        )
    return _flag(session, emails, True, "archived", "on request")


def restore(session: Session, email_ids: Sequence[int]) -> list[int]:
    """Bring archived emails back to the working lists."""
    emails = _load(session, email_ids)
    return _flag(session, emails, False, "restored", "on request")


def _load(session: Session, email_ids: Sequence[int]) -> list[Email]:
    wanted = list(dict.fromkeys(email_ids))
    emails = {
        e.id: e
        for e in session.scalars(
            select(Email).where(Email.id.in_(wanted)).with_for_update()
        )
    }
    missing = [i for i in wanted if i not in emails]
    if missing:
        raise NotFound("no such email: " + ", ".join(str(i) for i in missing))
    return [emails[i] for i in wanted]


def _flag(
    session: Session, emails: list[Email], archived: bool, decision: str, why: str
) -> list[int]:
    changed = [e for e in emails if e.archived != archived]
    for email in changed:
        email.archived = archived
    session.flush()
    _record(session, [(e.id, e.account_id) for e in changed], decision, why)
    return [e.id for e in changed]


def _record(
    session: Session,
    rows: Iterable[tuple[int, str | None]],
    decision: str,
    detail: str,
) -> None:
    """One trace row and one log line per email."""
    rows = list(rows)
    if not rows:
        return
    now = utcnow()
    session.execute(
        insert(EmailTrace),
        [
            {
                "email_id": email_id,
                "at": now,
                "stage": STAGE,
                "decision": decision,
                "detail": detail,
            }
            for email_id, _ in rows
        ],
    )
    for email_id, account_id in rows:
        log.info("email=%s account=%s %s: %s", email_id, account_id, decision, detail)
