"""``sysmail cases|leads|activities``: what incoming mail created."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy import select

from cli.output import emit, json_option
from shared.db import session_scope
from shared.errors import NotFound
from shared.models import Activity, Case, Lead


def _case(case: Case) -> dict[str, Any]:
    return {
        "id": case.id,
        "subject": case.subject,
        "status": case.status,
        "account": case.account_id,
        "contact": case.contact_id,
        "business_account": case.business_account_id,
        "owner": case.owner_id,
        "created_at": case.created_at,
        "closed_at": case.closed_at,
    }


def _lead(lead: Lead) -> dict[str, Any]:
    return {
        "id": lead.id,
        "name": lead.name,
        "email": lead.email,
        "status": lead.status,
        "account": lead.account_id,
        "owner": lead.owner_id,
        "created_at": lead.created_at,
    }


def _activity(activity: Activity) -> dict[str, Any]:
    return {
        "id": activity.id,
        "kind": activity.kind,
        "summary": activity.summary,
        "email": activity.email_id,
        "contact": activity.contact_id,
        "business_account": activity.business_account_id,
        "case": activity.case_id,
        "lead": activity.lead_id,
        "campaign": activity.campaign_id,
        "created_at": activity.created_at,
    }


@click.group("cases")
def cases() -> None:
    """Cases created from incoming mail."""


@cases.command("list")
@click.option("--status", type=click.Choice(["open", "closed"]))
@json_option
def list_cases(status: str | None, as_json: bool) -> None:
    """List cases, newest first."""
    query = select(Case).order_by(Case.id.desc())
    if status:
        query = query.where(Case.status == status)
    with session_scope() as session:
        rows = [_case(c) for c in session.scalars(query)]
    emit(rows, as_json, ("id", "status", "subject", "contact", "owner"))


@cases.command("show")
@click.argument("case_id", type=int)
@json_option
def show_case(case_id: int, as_json: bool) -> None:
    """Show a case with its activities."""
    with session_scope() as session:
        case = session.get(Case, case_id)
        if case is None:
            raise NotFound(f"case {case_id} does not exist")
        record = _case(case)
        record["activities"] = [
            _activity(a)
            for a in session.scalars(
                select(Activity)
                .where(Activity.case_id == case_id)
                .order_by(Activity.id)
            )
        ]
    emit(record, as_json)


@click.group("leads")
def leads() -> None:
    """Leads created from mail of unknown senders."""


@leads.command("list")
@json_option
def list_leads(as_json: bool) -> None:
    """List leads, newest first."""
    with session_scope() as session:
        rows = [
            _lead(x) for x in session.scalars(select(Lead).order_by(Lead.id.desc()))
        ]
    emit(rows, as_json, ("id", "name", "email", "status", "owner"))


@click.group("activities")
def activities() -> None:
    """Emails filed on contacts, business accounts, cases, leads, campaigns."""


@activities.command("list")
@click.option("--contact", help="Only this contact's activities.")
@click.option("--case", "case_id", type=int, help="Only this case's activities.")
@click.option("--campaign", help="Only this campaign's activities.")
@json_option
def list_activities(
    contact: str | None, case_id: int | None, campaign: str | None, as_json: bool
) -> None:
    """List activities, newest first."""
    query = select(Activity).order_by(Activity.id.desc())
    if contact:
        query = query.where(Activity.contact_id == contact)
    if case_id is not None:
        query = query.where(Activity.case_id == case_id)
    if campaign:
        query = query.where(Activity.campaign_id == campaign)
    with session_scope() as session:
        rows = [_activity(a) for a in session.scalars(query)]
    emit(rows, as_json, ("id", "kind", "email", "contact", "case", "lead", "summary"))


COMMANDS: list[click.Command] = [cases, leads, activities]
