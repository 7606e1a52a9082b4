"""The classifier's domain: what a received email is, and whom it concerns.

It parses the stored message, decides whether a machine sent it, finds the
conversation it belongs to and matches the sender to the directory. Every
decision goes to the email's processing trace.
"""

from __future__ import annotations

import logging
import re

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from shared.db import session_scope
from shared.history import change_status, trace
from shared.inbound.automatic import automatic_reason
from shared.inbound.parse import ParsedEmail, parse_email
from shared.models import (
    Account,
    Attachment,
    BusinessAccount,
    Contact,
    Email,
    Employee,
    Lead,
    Preferences,
)

log = logging.getLogger(__name__)

STAGE = "classifier"
# PostgreSQL text cannot hold NUL; broken mail sometimes contains it.
_NUL = "\x00"


def classify_email(email_id: int) -> bool:
    """Classify one received email; True when the next stage should file it.

    Returns False when there is nothing (more) to do: the email is gone,
    already processed, or its account does not process incoming mail.
    """
    with session_scope() as session:
        email = _pending_email(session, email_id)
        if email is None:
            return False
        account = session.get(Account, email.account_id) if email.account_id else None
        if account is None or not account.processing_active:
            finish_without_processing(session, email, STAGE)
            return False

        parsed = _parse(session, email)
        if parsed is not None:
            _store_parsed(email, parsed)
            _store_attachments(session, email, account, parsed)
            _detect_automatic(session, email, parsed)
            _find_conversation(session, email, parsed)
            _match_sender(session, email)
            if parsed.bounce is not None:
                _record_bounce(session, email, parsed)
        log.info(
            "email=%s account=%s classified: automatic=%s parent=%s contact=%s",
            email.id,
            email.account_id,
            email.is_automatic,
            email.parent_id,
            email.contact_id,
        )
        return True


def finish_without_processing(session: Session, email: Email, stage: str) -> None:
    """Close an email of an account whose incoming processing is off."""
    trace(session, email, stage, "processing off", "the account does not process")
    change_status(session, email, "processed", "processing off")


def _pending_email(session: Session, email_id: int) -> Email | None:
    # The row lock makes a redelivered message wait, then see the result.
    email = session.get(Email, email_id, with_for_update=True)
    if email is None:
        log.warning("email=%s gone before classification", email_id)
        return None
    if email.direction != "in" or email.status != "pending_processing":
        log.info(
            "email=%s account=%s is %s, not classified again",
            email.id,
            email.account_id,
            email.status,
        )
        return None
    return email


def _parse(session: Session, email: Email) -> ParsedEmail | None:
    try:
        return parse_email(email.raw or b"")
    except Exception as exc:  # bad mail must not stop the stage
        log.warning(
            "email=%s account=%s cannot be parsed: %r", email.id, email.account_id, exc
        )
        # What cannot be read cannot be answered safely either.
        email.is_automatic = True
        email.automatic_reason = "message could not be parsed"
        trace(session, email, STAGE, "unparseable", repr(exc)[:500])
        return None


def _store_parsed(email: Email, parsed: ParsedEmail) -> None:
    email.in_reply_to = " ".join(parsed.in_reply_to) or None
    email.references = " ".join(parsed.references) or None
    email.from_name = _clean(parsed.from_name, 200)
    email.reply_to = _clean(parsed.reply_to, 320)
    email.cc_addresses = [_clean(a, 320) or "" for a in parsed.cc_addresses]
    email.body_text = parsed.text.replace(_NUL, "")
    email.body_html = parsed.html.replace(_NUL, "") if parsed.html else None


def _store_attachments(
    session: Session, email: Email, account: Account, parsed: ParsedEmail
) -> None:
    """Keep the attachments the account accepts; record the others' drop.

    The raw message stays complete either way; a dropped attachment is
    neither kept apart nor forwarded.
    """
    if _already_stored(session, email):
        return
    for attachment in parsed.attachments:
        size = len(attachment.data)
        reason = attachment_refusal(account, attachment.filename, size)
        session.add(
            Attachment(
                email_id=email.id,
                filename=_clean(attachment.filename, 255) or "attachment",
                content_type=attachment.content_type[:255],
                size=size,
                data=None if reason else attachment.data,
                dropped_reason=reason[:200] if reason else None,
            )
        )
        if reason:
            trace(session, email, STAGE, "attachment dropped", reason)


def _already_stored(session: Session, email: Email) -> bool:
    found = session.scalars(
        select(Attachment.id).where(Attachment.email_id == email.id).limit(1)
    ).first()
    return found is not None


def attachment_refusal(account: Account, filename: str, size: int) -> str | None:
    """Why the account does not keep a received attachment, or None."""
    if not account.attachments_allowed:
        return f"{filename}: the account accepts no attachments"
    allowed = {_extension(t) for t in account.attachment_types or [] if t.strip()}
    if allowed and _extension(filename) not in allowed:
        listed = ", ".join(sorted(allowed))
        return f"{filename}: type not allowed (allowed: {listed})"
    limit = account.attachment_max_bytes
    if limit is not None and size > limit:
        return f"{filename}: {size} bytes, more than the limit of {limit}"
    return None


def _extension(name: str) -> str:
    name = name.strip().lower()
    return "." + name.rpartition(".")[2] if "." in name else ""


def _clean(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    return value.replace(_NUL, "")[:limit]


def _detect_automatic(session: Session, email: Email, parsed: ParsedEmail) -> None:
    reason = automatic_reason(parsed, own_addresses(session))
    email.is_automatic = reason is not None
    email.automatic_reason = reason
    if reason is not None:
        trace(session, email, STAGE, "automatic", reason)


def own_addresses(session: Session) -> set[str]:
    """Every address the system's accounts send from, lower-cased."""
    rows = session.execute(select(Account.address, Account.reply_address)).all()
    return {a.lower() for row in rows for a in row if a}


def _find_conversation(session: Session, email: Email, parsed: ParsedEmail) -> None:
    found = _parent_by_header(session, email, parsed)
    if found is None:
        found = _parent_by_tag(session, email, parsed.subject)
    if found is None:
        trace(session, email, STAGE, "thread", "no earlier email matched")
        return

    parent, how = found
    email.parent_id = parent.id
    email.case_id = parent.case_id
    email.campaign_id = parent.campaign_id
    email.owner_id = parent.owner_id
    # A reply to mass email concerns the contact it was sent to.
    email.contact_id = parent.contact_id
    trace(session, email, STAGE, "thread", f"{how} matched email {parent.id}")


def _parent_by_header(
    session: Session, email: Email, parsed: ParsedEmail
) -> tuple[Email, str] | None:
    # The nearest ancestor first: In-Reply-To, then References from the end.
    candidates = [("In-Reply-To", mid) for mid in parsed.in_reply_to]
    candidates += [("References", mid) for mid in reversed(parsed.references)]
    for header, message_id in candidates:
        parent = session.scalars(
            select(Email)
            .where(
                or_(
                    Email.message_id == message_id,
                    Email.message_id == message_id.strip("<>"),
                ),
                Email.id != email.id,
            )
            # One message can sit in two accounts' boxes: prefer this one's.
            .order_by((Email.account_id == email.account_id).desc(), Email.id)
            .limit(1)
        ).first()
        if parent is not None:
            return parent, header
    return None


def _parent_by_tag(
    session: Session, email: Email, subject: str
) -> tuple[Email, str] | None:
    prefix, suffix = tag_wrapping(session)
    pattern = re.escape(prefix) + r"#(\d{1,18})" + re.escape(suffix)
    for match in re.finditer(pattern, subject):
        parent = session.get(Email, int(match.group(1)))
        if parent is not None and parent.id != email.id:
            return parent, f"system tag {match.group(0)!r} in the subject"
    return None


def tag_wrapping(session: Session) -> tuple[str, str]:
    """The preferences' tag prefix and suffix (defaults when none are set)."""
    preferences = session.get(Preferences, 1)
    if preferences is None:
        return "[", "]"
    return preferences.tag_prefix, preferences.tag_suffix


def _match_sender(session: Session, email: Email) -> None:
    address = (email.from_address or "").lower()
    if not address:
        trace(session, email, STAGE, "sender", "no sender address")
        return

    employee = session.scalars(
        select(Employee).where(func.lower(Employee.email) == address).limit(1)
    ).first()
    if employee is not None:
        email.employee_id = employee.id
        trace(session, email, STAGE, "sender", f"employee {employee.id}")

    contact = session.scalars(
        select(Contact)
        .where(func.lower(Contact.email) == address)
        .order_by(Contact.id)
        .limit(1)
    ).first()
    if contact is not None:
        email.contact_id = contact.id
        email.business_account_id = contact.business_account_id
        trace(session, email, STAGE, "sender", f"contact {contact.id}")
    else:
        business = session.scalars(
            select(BusinessAccount)
            .where(func.lower(BusinessAccount.email) == address)
            .order_by(BusinessAccount.id)
            .limit(1)
        ).first()
        if business is not None:
            email.business_account_id = business.id
            trace(session, email, STAGE, "sender", f"business account {business.id}")

    lead = session.scalars(
        select(Lead).where(func.lower(Lead.email) == address).order_by(Lead.id).limit(1)
    ).first()
    if lead is not None:
        email.lead_id = lead.id
        trace(session, email, STAGE, "sender", f"lead {lead.id}")

    unknown = employee is None and contact is None and lead is None
    if unknown and email.business_account_id is None:
        trace(session, email, STAGE, "sender", f"{address} is not known")


def _record_bounce(session: Session, email: Email, parsed: ParsedEmail) -> None:
    """Mark the email that bounced and, when permanent, its recipients."""
    bounce = parsed.bounce
    assert bounce is not None
    marked: list[str] = []

    # A delay notice is not a bounce: the server still tries to deliver.
    if bounce.permanent and bounce.original_message_id:
        original_id = bounce.original_message_id
        result = session.execute(
            update(Email)
            .where(
                Email.direction == "out",
                or_(
                    Email.message_id == original_id,
                    Email.message_id == original_id.strip("<>"),
                ),
            )
            .values(bounced=True)
            .returning(Email.id)
        )
        marked += [f"email {row[0]}" for row in result]
    if bounce.permanent and bounce.recipients:
        lowered = [r.lower() for r in bounce.recipients]
        result = session.execute(
            update(Contact)
            .where(func.lower(Contact.email).in_(lowered))
            .values(bounced=True)
            .returning(Contact.id)
        )
        marked += [f"contact {row[0]}" for row in result]

    detail = ", ".join(marked) or "neither the email nor the recipient is known"
    trace(
        session,
        email,
        STAGE,
        "bounce",
        f"{'permanent' if bounce.permanent else 'temporary'} failure for "
        f"{', '.join(bounce.recipients) or 'unknown recipients'}: marked {detail}",
    )
