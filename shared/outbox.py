"""The outbox: outgoing email stored pending, then handed to the sender.

Queuing and releasing are two steps on purpose. ``queue_email`` only writes
rows, inside the caller's transaction, the message already rendered to
``raw`` so the sender only sends it; once the caller has committed,
``release`` publishes one SendEmail per chunk of up to SEND_CHUNK emails of
one account, so a campaign costs the broker a few hundred messages, not
thousands, and its chunks spread over the sender threads. When RabbitMQ is
down the emails simply stay pending with no ``enqueued_at``, and the scheduler's
``release_due`` publishes them later. Publishing twice is harmless: the
sender claims an email before it sends it, so a second message finds it
claimed or done and sends nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from email.utils import make_msgid

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from config.settings import get_settings
from shared import history
from shared.bus import publish
from shared.db import session_scope
from shared.errors import ConfigError, NotFound, SysmailError
from shared.mail.compose import (
    Composition,
    InvalidHeader,
    build_raw,
    check_value,
    guess_type,
)
from shared.messages import SendEmail
from shared.models import (
    Account,
    Attachment,
    Email,
    EmailStatusChange,
    OutboxEntry,
    Preferences,
    User,
    utcnow,
)

log = logging.getLogger(__name__)

# Kinds that are sysmail's own automatic mail and say so in their headers.
AUTOMATIC_KINDS = frozenset({"receipt", "reply", "forward"})
# A pending email published this long ago and still pending lost its message
# (broker restarted without it, or it was dropped): publish it again.
REPUBLISH_AFTER = timedelta(minutes=10)
# Emails per SendEmail. Large enough that the broker and the claim cost little
# per email, small enough that a campaign spreads over every sender thread.
SEND_CHUNK = 25
# Say a broker outage once per this many seconds, not once per email.
_OUTAGE_LOG_EVERY = 60.0
_last_outage_log = 0.0
_outage_lock = threading.Lock()


class OutboxError(SysmailError):
    """An email cannot be queued, retried or canceled as asked."""


def preferences(session: Session) -> Preferences:
    """The installation's preferences, or their defaults before any are set."""
    return session.get(Preferences, 1) or Preferences(
        id=1, resend_attempts=0, tag_prefix="[", tag_suffix="]", suspended=False
    )


def system_tag(email_id: int, prefs: Preferences) -> str:
    return f"{prefs.tag_prefix}#{email_id}{prefs.tag_suffix}"


def resolve_account(
    session: Session, account_id: str | None = None, user_id: str | None = None
) -> Account:
    """The account that sends: explicit, else the user's, else the default."""
    if account_id is not None:
        account = session.get(Account, account_id)
        if account is None:
            raise NotFound(f"account {account_id} does not exist")
        how = "chosen"
    else:
        chosen_id = None
        how = "default of the preferences"
        if user_id is not None:
            user = session.get(User, user_id)
            if user is None:
                raise NotFound(f"user {user_id} does not exist")
            chosen_id = user.default_account_id
            how = f"default of user {user_id}"
        if chosen_id is None:
            chosen_id = preferences(session).default_account_id
            how = "default of the preferences"
        if chosen_id is None:
            raise ConfigError(
                "no account to send from: give --account, set a default account "
                "for the user, or set the default account in the preferences"
            )
        account = session.get(Account, chosen_id)
        if account is None:
            raise NotFound(f"account {chosen_id} ({how}) does not exist")
    if not account.active:
        raise ConfigError(f"account {account.id} ({how}) is inactive")
    if not account.outgoing_host:
        raise ConfigError(f"account {account.id} ({how}) has no outgoing server")
    return account


def queue_email(
    session: Session,
    *,
    account: Account,
    to: Sequence[str],
    subject: str,
    text: str,
    html: str | None = None,
    kind: str = "single",
    reply_to_email: Email | None = None,
    scheduled_at: datetime | None = None,
    user: User | None = None,
    campaign_id: str | None = None,
    contact_id: str | None = None,
    case_id: int | None = None,
    headers: dict[str, str] | None = None,
    attachments: Sequence[tuple[str, str, bytes]] = (),
) -> Email:
    """Store a pending outgoing email; the caller commits, then releases it.

    The Message-ID is generated and stored here, before any attempt, and the
    subject gets the system tag so replies find their way back.
    """
    recipients = [check_value("To", address).strip() for address in to]
    if not any(recipients):
        raise OutboxError("an email needs at least one recipient")
    check_value("Subject", subject)
    prefs = preferences(session)
    from_address, from_name = sender_of(account, user)

    email = Email(
        account_id=account.id,
        direction="out",
        kind=kind,
        status="pending_processing",
        archived=False,
        attempts=0,
        message_id=make_msgid(domain=_domain(account.address)),
        subject=subject,
        from_address=from_address,
        from_name=from_name,
        to_address=recipients[0],
        to_addresses=recipients,
        cc_addresses=[],
        reply_to=account.reply_address,
        body_text=text,
        body_html=html,
        sent_by_user_id=user.id if user is not None else None,
        scheduled_at=scheduled_at,
        campaign_id=campaign_id,
        contact_id=contact_id,
        case_id=case_id,
        headers=dict(headers or {}),
        context={},
    )
    if reply_to_email is not None:
        _thread(email, reply_to_email)
    session.add(email)
    # The tag needs the id, which only the database hands out.
    session.flush()
    email.subject = f"{subject.strip()} {system_tag(email.id, prefs)}".strip()
    session.add(OutboxEntry(email_id=email.id))
    # The first entry of the history has no status before it.
    session.add(
        EmailStatusChange(
            email_id=email.id,
            at=utcnow(),
            from_status=None,
            to_status="pending_processing",
            reason=_queued_reason(scheduled_at),
        )
    )
    log.info(
        "email=%s account=%s queued for %d recipients",
        email.id,
        account.id,
        len(recipients),
    )

    files = [
        _attach(session, email, account, filename, content_type, data)
        for filename, content_type, data in attachments
    ]
    try:
        email.raw = build_raw(composition(email, [f for f in files if f is not None]))
    except InvalidHeader:
        # Left to the sender, which fails the email with this reason.
        email.raw = None
    return email


def composition(
    email: Email, files: Sequence[tuple[str, str, bytes]] = ()
) -> Composition:
    """What the email's stored fields make as a message."""
    return Composition(
        message_id=email.message_id or "",
        from_address=email.from_address or "",
        from_name=email.from_name or "",
        reply_to=email.reply_to,
        to=email.to_addresses or [email.to_address or ""],
        subject=email.subject,
        text=email.body_text or "",
        html=email.body_html,
        date=email.created_at or utcnow(),
        in_reply_to=email.in_reply_to,
        references=email.references,
        automatic=email.kind in AUTOMATIC_KINDS,
        headers=email.headers or {},
        attachments=files,
    )


def sender_of(account: Account, user: User | None) -> tuple[str, str]:
    """From address and name: a user's own only where the server allows it."""
    if user is None:
        return account.address, account.display_name or ""
    if account.validates_from or not user.email:
        return account.address, user.name or account.display_name or ""
    return user.email, user.name or ""


def _thread(email: Email, parent: Email) -> None:
    email.parent_id = parent.id
    if parent.message_id:
        email.in_reply_to = parent.message_id
        earlier = (parent.references or "").split()
        email.references = " ".join([*earlier, parent.message_id])
    if parent.case_id is not None and email.case_id is None:
        email.case_id = parent.case_id


def _queued_reason(scheduled_at: datetime | None) -> str:
    if scheduled_at is None:
        return "queued"
    return f"queued for {scheduled_at.isoformat(timespec='seconds')}"


def _attach(
    session: Session,
    email: Email,
    account: Account,
    filename: str,
    content_type: str,
    data: bytes,
) -> tuple[str, str, bytes] | None:
    content_type = content_type or guess_type(filename)
    reason = attachment_refusal(account, filename, len(data))
    session.add(
        Attachment(
            email_id=email.id,
            filename=filename,
            content_type=content_type,
            size=len(data),
            data=None if reason else data,
            dropped_reason=reason,
        )
    )
    if reason:
        history.trace(session, email, "outbox", "attachment dropped", reason)
        log.warning(
            "email=%s account=%s attachment %s dropped: %s",
            email.id,
            account.id,
            filename,
            reason,
        )
        return None
    return filename, content_type, data


def attachment_refusal(account: Account, filename: str, size: int) -> str | None:
    """Why the account may not send this attachment, or None when it may."""
    if not account.attachments_allowed:
        return f"{filename}: the account sends no attachments"
    allowed = {_extension(t) for t in account.attachment_types or [] if t.strip()}
    if allowed and _extension(filename) not in allowed:
        return f"{filename}: type not allowed (allowed: {', '.join(sorted(allowed))})"
    limit = account.attachment_max_bytes
    if limit is not None and size > limit:
        return f"{filename}: {size} bytes, more than the limit of {limit}"
    return None


def _extension(name: str) -> str:
    name = name.strip().lower()
    if "." not in name:
        return ""
    return "." + name.rpartition(".")[2]


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "localhost"


# -- handing emails to the sender -----------------------------------------


def release(email_ids: Iterable[int]) -> None:
    """Publish SendEmail for the emails that are due, in chunks; the rest wait.

    If the broker cannot be reached the emails stay pending without
    ``enqueued_at``; ``release_due`` publishes them once it is back.
    """
    ids = list(email_ids)
    if not ids:
        return
    with session_scope() as session:
        if preferences(session).suspended:
            return
        # Stamped before publishing: the sender may clear the stamp at once.
        due = session.execute(
            update(Email)
            .where(Email.id.in_(ids))
            .where(Email.status == "pending_processing")
            .where(Email.scheduled_at.is_(None) | (Email.scheduled_at <= utcnow()))
            .values(enqueued_at=utcnow())
            .returning(Email.id, Email.account_id)
        ).all()
    publish_or_unstamp([(row[0], row[1]) for row in due])


def release_due(limit: int = 1000) -> int:
    """Publish pending emails that are due and not yet (or long ago) published.

    Rows are taken with SKIP LOCKED and stamped in the same statement, so
    two schedulers running at once never publish the same email. Emails
    finished since the last pass leave the outbox first.
    """
    with session_scope() as session:
        if preferences(session).suspended:
            return 0
        session.execute(_FINISHED)
        rows = session.execute(
            text(
                """
                UPDATE emails SET enqueued_at = now()
                WHERE id IN (
                    SELECT e.id FROM outbox o
                    JOIN emails e ON e.id = o.email_id
                    JOIN accounts a ON a.id = e.account_id AND a.active
                    WHERE e.direction = 'out'
                      AND e.status = 'pending_processing'
                      AND (e.scheduled_at IS NULL OR e.scheduled_at <= now())
                      AND (e.enqueued_at IS NULL
                           OR e.enqueued_at < now() - :stale)
                    ORDER BY e.scheduled_at NULLS FIRST, e.id
                    LIMIT :limit
                    FOR UPDATE OF e SKIP LOCKED
                )
                RETURNING id, account_id
                """
            ),
            {"stale": REPUBLISH_AFTER, "limit": limit},
        ).all()
    published = publish_or_unstamp([(row[0], row[1]) for row in rows])
    if published:
        log.info("released %d due emails", published)
    return published


# Emails done with, out of the outbox. Their rows are locked, skipping any
# locked already: a retry holding one to make it pending again is left
# alone, and one committed meanwhile is seen pending and kept.
_FINISHED = text(
    """
    DELETE FROM outbox WHERE email_id IN (
        SELECT e.id FROM outbox o JOIN emails e ON e.id = o.email_id
        WHERE e.status NOT IN ('pending_processing', 'in_process')
        FOR UPDATE OF e SKIP LOCKED
    )
    """
)


def chunked(emails: Iterable[tuple[int, str | None]]) -> Iterator[tuple[int, ...]]:
    """Email ids in chunks of one account each, in id order."""
    by_account: dict[str | None, list[int]] = {}
    for email_id, account_id in sorted(emails):
        by_account.setdefault(account_id, []).append(email_id)
    for ids in by_account.values():
        for start in range(0, len(ids), SEND_CHUNK):
            yield tuple(ids[start : start + SEND_CHUNK])


def publish_or_unstamp(emails: Sequence[tuple[int, str | None]]) -> int:
    """Publish stamped emails; unstamp those the broker did not take, so the
    next pass of the scheduler tries them again."""
    if not emails:
        return 0
    published, unpublished = _publish_all(list(chunked(emails)))
    if unpublished:
        with session_scope() as session:
            session.execute(
                update(Email)
                .where(Email.id.in_(unpublished))
                .where(Email.status == "pending_processing")
                .values(enqueued_at=None)
            )
    return published


def recover_stale_claims() -> int:
    """Give back emails whose sender stopped while holding them.

    A worker killed between the server's acceptance and its commit leaves
    its email in_process; after the claim timeout it is sent again. That
    repeat is the one window in which an email can be sent twice.
    """
    timeout = timedelta(seconds=get_settings().claim_timeout)
    with session_scope() as session:
        stale = list(
            session.scalars(
                select(Email)
                .join(OutboxEntry, OutboxEntry.email_id == Email.id)
                .where(Email.direction == "out")
                .where(Email.status == "in_process")
                .where(Email.claimed_at < utcnow() - timeout)
                .with_for_update(of=Email, skip_locked=True)
            )
        )
        for email in stale:
            history.change_status(
                session,
                email,
                "pending_processing",
                f"claim older than {timeout.total_seconds():.0f} s taken back: "
                "the sender stopped while delivering",
            )
            email.claimed_at = None
            email.enqueued_at = None
    if stale:
        log.warning("took back %d stale claims", len(stale))
    return len(stale)


def retry(session: Session, email_id: int) -> Email:
    """A failed or canceled email back to pending, attempts reset."""
    email = _locked(session, email_id)
    if email.status not in ("failed", "canceled"):
        raise OutboxError(
            f"email {email_id} is {email.status}; only failed or canceled "
            "emails can be retried"
        )
    email.attempts = 0
    email.enqueued_at = None
    email.claimed_at = None
    history.change_status(session, email, "pending_processing", "retry asked")
    return email


def cancel(session: Session, email_id: int) -> Email:
    """A pending email canceled: it will not be sent."""
    email = _locked(session, email_id)
    if email.status != "pending_processing":
        raise OutboxError(
            f"email {email_id} is {email.status}; only pending emails can be canceled"
        )
    history.change_status(session, email, "canceled", "canceled by an operator")
    return email


def _locked(session: Session, email_id: int) -> Email:
    email = session.scalars(
        select(Email).where(Email.id == email_id).with_for_update()
    ).one_or_none()
    if email is None or email.direction != "out":
        raise NotFound(f"outgoing email {email_id} does not exist")
    return email


def _publish_all(chunks: Sequence[tuple[int, ...]]) -> tuple[int, list[int]]:
    """Publish in order; stop at the first broker error and say it once.

    Returns how many emails went out and the ids of those that did not.
    """
    for n, chunk in enumerate(chunks):
        try:
            publish(SendEmail(email_ids=chunk))
        except Exception as exc:
            # dramatiq raises its own connection errors and pika's; any of
            # them means the broker is unreachable now.
            left = [i for rest in chunks[n:] for i in rest]
            _log_outage(chunk[0], len(left), exc)
            return sum(len(c) for c in chunks[:n]), left
    return sum(len(c) for c in chunks), []


def _log_outage(email_id: int, left: int, exc: BaseException) -> None:
    global _last_outage_log
    with _outage_lock:
        now = time.monotonic()
        if now - _last_outage_log < _OUTAGE_LOG_EVERY:
            return
        _last_outage_log = now
    log.warning(
        "email=%s broker unreachable, %d emails stay pending until it is back: %s",
        email_id,
        left,
        exc,
    )
