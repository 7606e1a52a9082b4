"""The responder's domain: confirm receipt, answer the unassigned, route.

Every automatic reply is queued in the outbox inside this stage's
transaction; the caller releases the returned ids once it has committed.
Loop protection happens here: no reply to automatic mail, none for a reply
that joined a conversation, and at most REPLY_CAP replies to one address an
hour, whatever the sender does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.db import session_scope
from shared.errors import SysmailError
from shared.history import change_status, trace
from shared.inbound.classify import finish_without_processing, own_addresses
from shared.inbound.cleanup import should_delete
from shared.models import (
    Account,
    Activity,
    Attachment,
    BusinessAccount,
    Case,
    Contact,
    Email,
    Employee,
    Lead,
    Template,
    utcnow,
)
from shared.outbox import queue_email
from shared.templating import render

log = logging.getLogger(__name__)

STAGE = "responder"
# Automatic replies to one address within REPLY_WINDOW; more are held back.
REPLY_CAP = 5
REPLY_WINDOW = timedelta(hours=1)
_REPLY_KINDS = ("receipt", "reply")


@dataclass(frozen=True)
class Response:
    """What the responder did: emails to release, and the server copy's fate."""

    queued: list[int] = field(default_factory=list)
    delete_from_server: bool = False


def respond_to_email(email_id: int) -> Response:
    """Queue the email's automatic replies and forward; mark it processed.

    The caller releases the queued emails once this has committed, then
    removes the message from the server when delete_from_server says so.
    """
    with session_scope() as session:
        email = session.get(Email, email_id, with_for_update=True)
        if email is None or email.status != "pending_processing":
            log.info("email=%s is gone or done, no response", email_id)
            return Response()
        account = session.get(Account, email.account_id) if email.account_id else None
        if account is None or not account.processing_active:
            finish_without_processing(session, email, STAGE)
            return Response()

        queued: list[Email] = []
        context = _context(session, email, account)
        if email.is_automatic:
            trace(
                session,
                email,
                STAGE,
                "no reply",
                f"automatic mail ({email.automatic_reason})",
            )
        else:
            queued += _confirm_receipt(session, email, account, context)
            queued += _reply_unassigned(session, email, account, context)
        queued += _route_to_owner(session, email, account)

        delete = should_delete(account, _any_succeeded(session, email, queued))
        if delete:
            trace(
                session,
                email,
                STAGE,
                "delete",
                f"delete_processed is {account.delete_processed}",
            )
        change_status(session, email, "processed", "pipeline done")
        return Response([reply.id for reply in queued], delete)


def _any_succeeded(session: Session, email: Email, queued: list[Email]) -> bool:
    """Whether any processing option did something for the email.

    Every case, lead or contact the records stage files the email on gets
    an activity, so activities and queued emails tell the whole story.
    """
    if queued:
        return True
    filed = session.scalar(
        select(func.count(Activity.id)).where(Activity.email_id == email.id)
    )
    return bool(filed)


def _context(session: Session, email: Email, account: Account) -> dict[str, Any]:
    """What a template may use: plain values, never database objects."""
    case = session.get(Case, email.case_id) if email.case_id else None
    contact = session.get(Contact, email.contact_id) if email.contact_id else None
    sender = email.from_address or ""
    return {
        "email": {
            "id": email.id,
            "subject": email.subject,
            "from": sender,
            "from_address": sender,
            "from_name": email.from_name or "",
        },
        "case": {
            "id": case.id if case else "",
            "subject": case.subject if case else "",
        },
        "contact": {
            "id": contact.id if contact else "",
            "name": contact.name if contact else (email.from_name or ""),
            "email": contact.email if contact else sender,
        },
        "account": {
            "id": account.id,
            "address": account.address,
            "display_name": account.display_name,
        },
    }


def _confirm_receipt(
    session: Session, email: Email, account: Account, context: dict[str, Any]
) -> list[Email]:
    if account.confirm_receipt_template_id is None:
        return []
    if email.parent_id is not None:
        trace(
            session,
            email,
            STAGE,
            "no receipt",
            f"reply in the conversation of email {email.parent_id}",
        )
        return []
    return _reply(
        session, email, account, account.confirm_receipt_template_id, "receipt", context
    )


def _reply_unassigned(
    session: Session, email: Email, account: Account, context: dict[str, Any]
) -> list[Email]:
    if account.reply_unassigned_template_id is None:
        return []
    links = (
        email.parent_id,
        email.contact_id,
        email.business_account_id,
        email.case_id,
        email.lead_id,
    )
    if any(links):
        return []
    trace(session, email, STAGE, "unassigned", "no conversation, record or sender")
    return _reply(
        session, email, account, account.reply_unassigned_template_id, "reply", context
    )


def _reply(
    session: Session,
    email: Email,
    account: Account,
    template_id: str,
    kind: str,
    context: dict[str, Any],
) -> list[Email]:
    recipient = email.reply_to or email.from_address
    if not recipient:
        trace(session, email, STAGE, f"no {kind}", "the email has no sender address")
        return []
    if recipient.lower() in own_addresses(session):
        trace(session, email, STAGE, f"no {kind}", f"{recipient} is the system's own")
        return []
    sent = _recent_replies(session, recipient)
    if sent >= REPLY_CAP:
        trace(
            session,
            email,
            STAGE,
            f"no {kind}",
            f"held back: {sent} automatic replies to {recipient} in the last hour",
        )
        return []
    template = session.get(Template, template_id)
    if template is None:
        trace(session, email, STAGE, f"no {kind}", f"template {template_id} is gone")
        return []

    try:
        rendered = render(template, context)
        reply = queue_email(
            session,
            account=account,
            to=[recipient],
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            kind=kind,
            reply_to_email=email,
            case_id=email.case_id,
            contact_id=email.contact_id,
        )
    except SysmailError as exc:
        log.warning(
            "email=%s account=%s %s not queued: %s", email.id, account.id, kind, exc
        )
        trace(session, email, STAGE, f"no {kind}", str(exc))
        return []
    trace(session, email, STAGE, kind, f"queued email {reply.id} to {recipient}")
    return [reply]


def _recent_replies(session: Session, recipient: str) -> int:
    since = utcnow() - REPLY_WINDOW
    count = session.scalar(
        select(func.count(Email.id)).where(
            Email.direction == "out",
            Email.kind.in_(_REPLY_KINDS),
            func.lower(Email.to_address) == recipient.lower(),
            Email.created_at >= since,
        )
    )
    return int(count or 0)


def _route_to_owner(session: Session, email: Email, account: Account) -> list[Email]:
    if not account.route_to_owner:
        return []
    if email.is_automatic:
        trace(session, email, STAGE, "not routed", "automatic mail is not forwarded")
        return []
    owner = session.get(Employee, email.owner_id) if email.owner_id else None
    if owner is None or not owner.active or not owner.email:
        trace(session, email, STAGE, "not routed", "no active owner with an address")
        return []
    if owner.email.lower() == (email.from_address or "").lower():
        trace(session, email, STAGE, "not routed", f"{owner.id} sent it")
        return []

    text = _forwarded_text(email)
    if account.add_source_info:
        text = f"{_source_info(session, email)}\n\n{text}"
    try:
        forward = queue_email(
            session,
            account=account,
            to=[owner.email],
            subject=f"Fwd: {email.subject}",
            text=text,
            kind="forward",
            reply_to_email=email,
            case_id=email.case_id,
            contact_id=email.contact_id,
            attachments=_kept_attachments(session, email),
        )
    except SysmailError as exc:
        log.warning(
            "email=%s account=%s forward not queued: %s", email.id, account.id, exc
        )
        trace(session, email, STAGE, "not routed", str(exc))
        return []
    forward.owner_id = owner.id
    trace(session, email, STAGE, "routed", f"forwarded to {owner.id} as {forward.id}")
    return [forward]


def _kept_attachments(session: Session, email: Email) -> list[tuple[str, str, bytes]]:
    """The received attachments the account kept, to go with the forward."""
    kept = session.scalars(
        select(Attachment)
        .where(Attachment.email_id == email.id, Attachment.data.is_not(None))
        .order_by(Attachment.id)
    )
    return [(a.filename, a.content_type, a.data) for a in kept if a.data is not None]


def _forwarded_text(email: Email) -> str:
    sender = email.from_address or "unknown sender"
    if email.from_name:
        sender = f"{email.from_name} <{sender}>"
    received = (
        email.received_at.isoformat(timespec="minutes") if email.received_at else ""
    )
    return (
        "---------- Forwarded message ----------\n"
        f"From: {sender}\n"
        f"Date: {received}\n"
        f"Subject: {email.subject}\n"
        f"To: {', '.join(email.to_addresses or [])}\n\n"
        f"{email.body_text or ''}"
    )


def _source_info(session: Session, email: Email) -> str:
    """One line naming the records the email was filed on."""
    parts = []
    if email.case_id:
        parts.append(f"case #{email.case_id}")
    if email.contact_id:
        contact = session.get(Contact, email.contact_id)
        name = contact.name if contact is not None else ""
        parts.append(
            f"contact {email.contact_id} ({name})"
            if name
            else f"contact {email.contact_id}"
        )
    if email.business_account_id:
        business = session.get(BusinessAccount, email.business_account_id)
        label = business.name if business is not None else email.business_account_id
        parts.append(f"business account {label}")
    if email.lead_id:
        lead = session.get(Lead, email.lead_id)
        parts.append(
            f"lead #{email.lead_id}" + (f" ({lead.name})" if lead and lead.name else "")
        )
    if email.campaign_id:
        parts.append(f"campaign {email.campaign_id}")
    records = ", ".join(parts) or "no record"
    return f"sysmail: received by {email.account_id} as email {email.id}; {records}"
