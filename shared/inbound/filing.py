"""The records stage's domain: file a classified email on cases and leads.

Which employee owns the email is decided here too, because a new case takes
that owner: the conversation's owner first, then the account's assignment
map, then its default owner, skipping employees who are no longer active.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db import session_scope
from shared.history import trace
from shared.inbound.classify import finish_without_processing
from shared.models import (
    Account,
    Activity,
    AssignmentMap,
    AssignmentRule,
    Case,
    Email,
    Employee,
    Lead,
)

log = logging.getLogger(__name__)

STAGE = "records"


def file_email(email_id: int) -> bool:
    """Create or join the email's case, lead and activity; True to go on."""
    with session_scope() as session:
        email = session.get(Email, email_id, with_for_update=True)
        if email is None or email.status != "pending_processing":
            log.info("email=%s is gone or done, not filed", email_id)
            return False
        account = session.get(Account, email.account_id) if email.account_id else None
        if account is None or not account.processing_active:
            finish_without_processing(session, email, STAGE)
            return False
        if _already_filed(session, email):
            log.info("email=%s account=%s filed before", email.id, account.id)
            return True

        _assign_owner(session, email, account)
        if email.is_automatic:
            trace(
                session,
                email,
                STAGE,
                "no records",
                f"automatic mail ({email.automatic_reason}): no case, no lead",
            )
            return True

        _file_case(session, email, account)
        _create_lead(session, email, account)
        _add_activity(session, email, account)
        log.info(
            "email=%s account=%s filed: case=%s lead=%s owner=%s",
            email.id,
            account.id,
            email.case_id,
            email.lead_id,
            email.owner_id,
        )
        return True


def _already_filed(session: Session, email: Email) -> bool:
    found = session.scalars(
        select(Activity.id).where(Activity.email_id == email.id).limit(1)
    ).first()
    return found is not None


def _assign_owner(session: Session, email: Email, account: Account) -> None:
    conversation_owner = email.owner_id
    if conversation_owner is None and email.case_id is not None:
        case = session.get(Case, email.case_id)
        conversation_owner = case.owner_id if case is not None else None
    if _active(session, conversation_owner):
        email.owner_id = conversation_owner
        trace(session, email, STAGE, "owner", f"{email.owner_id} owns the conversation")
        return

    rule = _matching_rule(session, email, account)
    if rule is not None:
        email.owner_id = rule.owner_id
        trace(
            session,
            email,
            STAGE,
            "owner",
            f"{rule.owner_id} by rule {rule.position + 1} of map "
            f"{rule.map_id} ({rule.field} {rule.value!r})",
        )
    elif _active(session, account.default_owner_id):
        email.owner_id = account.default_owner_id
        trace(session, email, STAGE, "owner", f"{email.owner_id}, the default owner")
    else:
        email.owner_id = None
        trace(session, email, STAGE, "owner", "no active owner found")


def _active(session: Session, employee_id: str | None) -> bool:
    if employee_id is None:
        return False
    employee = session.get(Employee, employee_id)
    return employee is not None and employee.active


def _matching_rule(
    session: Session, email: Email, account: Account
) -> AssignmentRule | None:
    if account.assignment_map_id is None:
        return None
    assignment_map = session.get(AssignmentMap, account.assignment_map_id)
    if assignment_map is None:
        return None
    for rule in assignment_map.rules:
        if _rule_matches(rule, email) and _active(session, rule.owner_id):
            return rule
    return None


def _rule_matches(rule: AssignmentRule, email: Email) -> bool:
    value = rule.value.strip().lower()
    sender = (email.from_address or "").lower()
    if rule.field == "from_address":
        return sender == value
    if rule.field == "from_domain":
        return sender.rpartition("@")[2] == value.lstrip("@")
    if rule.field == "to_address":
        recipients = list(email.to_addresses or []) + list(email.cc_addresses or [])
        return value in {r.lower() for r in recipients}
    if rule.field == "subject_contains":
        return value in (email.subject or "").lower()
    return False


def _file_case(session: Session, email: Email, account: Account) -> None:
    if email.case_id is not None:
        case = session.get(Case, email.case_id)
        if case is not None:
            if case.status == "closed":
                case.status = "open"
                case.closed_at = None
                trace(session, email, STAGE, "case", f"reopened case {case.id}")
            trace(session, email, STAGE, "case", f"joined case {case.id}")
            return
        email.case_id = None

    if not account.create_case:
        trace(session, email, STAGE, "case", "creating cases is off")
        return
    case = Case(
        subject=email.subject,
        status="open",
        account_id=account.id,
        contact_id=email.contact_id,
        business_account_id=email.business_account_id,
        owner_id=email.owner_id,
    )
    session.add(case)
    session.flush()
    email.case_id = case.id
    trace(session, email, STAGE, "case", f"created case {case.id}")


def _create_lead(session: Session, email: Email, account: Account) -> None:
    known = (
        email.contact_id,
        email.business_account_id,
        email.lead_id,
        email.employee_id,
    )
    if any(known) or not email.from_address:
        return
    if not account.create_lead:
        trace(session, email, STAGE, "lead", "unknown sender; creating leads is off")
        return
    lead = Lead(
        name=email.from_name or "",
        email=email.from_address,
        account_id=account.id,
        owner_id=email.owner_id,
    )
    session.add(lead)
    session.flush()
    email.lead_id = lead.id
    trace(session, email, STAGE, "lead", f"created lead {lead.id} for the sender")


def _add_activity(session: Session, email: Email, account: Account) -> None:
    activity = Activity(
        kind="email",
        summary=f"{email.from_address or 'unknown sender'}: {email.subject}"[:2000],
        email_id=email.id,
        case_id=email.case_id,
        lead_id=email.lead_id,
        campaign_id=email.campaign_id,
    )
    # A reply to mass email always goes back to the campaign and its contact.
    if account.attach_to_contact or email.campaign_id is not None:
        activity.contact_id = email.contact_id
        activity.business_account_id = email.business_account_id
    elif email.contact_id or email.business_account_id:
        trace(session, email, STAGE, "activity", "attaching to contacts is off")

    links = (
        activity.case_id,
        activity.lead_id,
        activity.campaign_id,
        activity.contact_id,
        activity.business_account_id,
    )
    if not any(links):
        trace(session, email, STAGE, "activity", "no record to file the email on")
        return
    session.add(activity)
    named = [
        f"{label} {value}"
        for label, value in zip(
            ("case", "lead", "campaign", "contact", "business account"),
            links,
            strict=True,
        )
        if value
    ]
    trace(session, email, STAGE, "activity", "filed on " + ", ".join(named))
