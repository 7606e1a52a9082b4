"""Applying a directory file: employees, users, business accounts, contacts
and assignment maps, each created or updated, all or nothing."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.configfiles.files import ConfigFile, Tally, validate
from shared.configfiles.references import check_unique, require
from shared.configfiles.schema import DirectoryFile
from shared.models import (
    Account,
    AssignmentMap,
    AssignmentRule,
    Base,
    BusinessAccount,
    Contact,
    Employee,
    User,
)

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Base)

SECTIONS = ("employees", "users", "business_accounts", "contacts", "assignment_maps")


def apply_directory(session: Session, file: ConfigFile) -> Tally:
    """Create or update what a directory file declares; raise before any write."""
    spec = validate(file, DirectoryFile)
    for section in SECTIONS:
        check_unique(file, section, [item.id for item in getattr(spec, section)])
    _check_references(session, file, spec)

    tally = Tally()
    # Referenced kinds first, so each flush finds what the next one points to.
    for item in spec.business_accounts:
        row = _row(session, BusinessAccount, item.id, tally, "business account")
        row.name = item.name
        row.email = item.email
    for employee in spec.employees:
        row_e = _row(session, Employee, employee.id, tally, "employee")
        row_e.name = employee.name
        row_e.email = employee.email
        row_e.active = employee.active
    session.flush()

    for contact in spec.contacts:
        # `bounced` is what mail taught us, not configuration: it stays.
        row_c = _row(session, Contact, contact.id, tally, "contact")
        row_c.name = contact.name
        row_c.email = contact.email
        row_c.business_account_id = contact.business_account
        row_c.opted_out = contact.opted_out
        row_c.fields = dict(contact.fields)
    for user in spec.users:
        row_u = _row(session, User, user.id, tally, "user")
        row_u.email = user.email
        row_u.name = user.name
        row_u.default_account_id = user.default_account
    for assignment_map in spec.assignment_maps:
        row_m = _row(session, AssignmentMap, assignment_map.id, tally, "assignment map")
        # Old rules go before the new ones arrive: positions are keys.
        row_m.rules.clear()
        session.flush()
        for position, rule in enumerate(assignment_map.rules):
            field, value = rule.when.condition
            row_m.rules.append(
                AssignmentRule(
                    position=position, field=field, value=value, owner_id=rule.owner
                )
            )
    session.flush()

    for noun, (created, updated) in tally.counts.items():
        log.info(
            "directory %s: %d created, %d updated from %s",
            noun,
            created,
            updated,
            file.name,
        )
    return tally


def _row(session: Session, model: type[R], item_id: str, tally: Tally, noun: str) -> R:
    row = session.get(model, item_id)
    tally.add(noun, created=row is None)
    if row is None:
        row = model(id=item_id)
        session.add(row)
    return row


def _check_references(session: Session, file: ConfigFile, spec: DirectoryFile) -> None:
    business_accounts = {b.id for b in spec.business_accounts}
    employees = {e.id for e in spec.employees}
    for index, contact in enumerate(spec.contacts):
        require(
            session,
            file,
            BusinessAccount,
            contact.business_account,
            ["contacts", index, "business_account"],
            "business account",
            business_accounts,
        )
    for index, user in enumerate(spec.users):
        require(
            session,
            file,
            Account,
            user.default_account,
            ["users", index, "default_account"],
            "account",
        )
    for index, assignment_map in enumerate(spec.assignment_maps):
        for position, rule in enumerate(assignment_map.rules):
            require(
                session,
                file,
                Employee,
                rule.owner,
                ["assignment_maps", index, "rules", position, "owner"],
                "employee",
                employees,
            )


def directory_rows(session: Session, kind: str) -> list[dict[str, Any]]:
    """Every record of one kind (`employees`, `business-accounts`, ...)."""
    kind = kind.replace("-", "_")
    if kind == "employees":
        return [
            {"id": e.id, "name": e.name, "email": e.email, "active": e.active}
            for e in session.scalars(select(Employee).order_by(Employee.id))
        ]
    if kind == "users":
        return [
            {
                "id": u.id,
                "email": u.email,
                "name": u.name,
                "default_account": u.default_account_id,
            }
            for u in session.scalars(select(User).order_by(User.id))
        ]
    if kind == "business_accounts":
        return [
            {"id": b.id, "name": b.name, "email": b.email}
            for b in session.scalars(
                select(BusinessAccount).order_by(BusinessAccount.id)
            )
        ]
    if kind == "contacts":
        return [
            {
                "id": c.id,
                "name": c.name,
                "email": c.email,
                "business_account": c.business_account_id,
                "opted_out": c.opted_out,
                "bounced": c.bounced,
                "fields": c.fields,
            }
            for c in session.scalars(select(Contact).order_by(Contact.id))
        ]
    if kind == "assignment_maps":
        return [
            {
                "id": m.id,
                "rules": [
                    {"when": {r.field: r.value}, "owner": r.owner_id} for r in m.rules
                ],
            }
            for m in session.scalars(select(AssignmentMap).order_by(AssignmentMap.id))
        ]
    raise ValueError(f"unknown directory kind {kind}")
