"""Applying an accounts file: check everything, then create or update.

A file declares each account completely: a key left out takes its default,
except the stored passwords (kept unless the file names a new source) and
`default` (left alone unless the file says true or false).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import crypto
from shared.configfiles.files import ConfigFile, Tally, validate
from shared.configfiles.references import check_unique, require
from shared.configfiles.schema import AccountsFile, AccountSpec
from shared.models import Account, AssignmentMap, Base, Employee, Template
from shared.preferences import find_preferences, get_preferences

log = logging.getLogger(__name__)

PROCESSING_CONFIRM = ("processing", "confirm_receipt")
PROCESSING_REPLY = ("processing", "reply_unassigned")
DEFAULT_OWNER = ("assignment", "default_owner")

# Asks a person for a password without echoing it; gets the question.
PasswordPrompt = Callable[[str], str]


@dataclass(frozen=True)
class _Secret:
    """Where one login's password comes from in this apply."""

    index: int
    part: str  # "incoming" or "outgoing"
    encrypted: bytes


def apply_accounts(
    session: Session,
    file: ConfigFile,
    *,
    prompt: PasswordPrompt | None = None,
    environ: Mapping[str, str] | None = None,
) -> Tally:
    """Create or update the accounts a file declares; raise before any write."""
    spec = validate(file, AccountsFile)
    accounts = spec.accounts
    environ = os.environ if environ is None else environ

    check_unique(file, "accounts", [a.id for a in accounts])
    existing = _existing(session, [a.id for a in accounts])
    _check_references(session, file, accounts)
    default_changes, new_default = _check_default(session, file, accounts)
    secrets = _passwords(file, accounts, existing, environ, prompt)

    tally = Tally()
    for index, account_spec in enumerate(accounts):
        row = existing.get(account_spec.id)
        if row is None:
            row = Account(id=account_spec.id)
            session.add(row)
        _fill(row, account_spec)
        for secret in secrets:
            if secret.index == index:
                setattr(row, f"{secret.part}_password", secret.encrypted)
        _forget_unused_passwords(row)
        tally.add("account", created=account_spec.id not in existing)
        log.info(
            "account %s %s from %s",
            row.id,
            "created" if account_spec.id not in existing else "updated",
            file.name,
        )
    session.flush()

    if default_changes:
        get_preferences(session).default_account_id = new_default
        log.info("account %s is now the default account", new_default or "(none)")
    return tally


def _existing(session: Session, ids: Sequence[str]) -> dict[str, Account]:
    rows = session.scalars(select(Account).where(Account.id.in_(ids)))
    return {row.id: row for row in rows}


def _check_references(
    session: Session, file: ConfigFile, accounts: Sequence[AccountSpec]
) -> None:
    for index, account in enumerate(accounts):
        where: list[str | int] = ["accounts", index]
        processing, assignment = account.processing, account.assignment
        references: list[tuple[type[Base], str | None, tuple[str, str], str]] = [
            (Template, processing.confirm_receipt, PROCESSING_CONFIRM, "template"),
            (Template, processing.reply_unassigned, PROCESSING_REPLY, "template"),
            (AssignmentMap, assignment.map, ("assignment", "map"), "assignment map"),
            (Employee, assignment.default_owner, DEFAULT_OWNER, "employee"),
        ]
        for model, value, key, noun in references:
            require(session, file, model, value, [*where, *key], noun)


def _check_default(
    session: Session, file: ConfigFile, accounts: Sequence[AccountSpec]
) -> tuple[bool, str | None]:
    """Whether the default account changes, and to which (None: no default)."""
    chosen = [i for i, a in enumerate(accounts) if a.default is True]
    if len(chosen) > 1:
        first = accounts[chosen[0]].id
        raise file.error(
            ["accounts", chosen[1], "default"],
            f"a second default account; {first} is already marked default",
        )

    preferences = find_preferences(session)
    current = preferences.default_account_id if preferences else None
    released = {a.id for a in accounts if a.default is False}
    if chosen:
        index = chosen[0]
        wanted = accounts[index].id
        if current not in (None, wanted) and current not in released:
            raise file.error(
                ["accounts", index, "default"],
                f"a second default account; {current} is the default "
                f"(mark it default: false or use `sysmail preferences set`)",
            )
        return True, wanted
    if current in released:
        return True, None
    return False, current


def _passwords(
    file: ConfigFile,
    accounts: Sequence[AccountSpec],
    existing: Mapping[str, Account],
    environ: Mapping[str, str],
    prompt: PasswordPrompt | None,
) -> list[_Secret]:
    """Every new password, encrypted; asks for missing ones only at the end."""
    found: list[_Secret] = []
    missing: list[tuple[int, str]] = []
    for index, account in enumerate(accounts):
        row = existing.get(account.id)
        outgoing = account.outgoing
        logins = {
            "incoming": (
                account.incoming.protocol != "none",
                account.incoming.password_env,
                row.incoming_password if row else None,
            ),
            "outgoing": (
                outgoing is not None and outgoing.auth == "custom",
                outgoing.password_env if outgoing else None,
                row.outgoing_password if row else None,
            ),
        }
        for part, (needed, variable, stored) in logins.items():
            if not needed:
                continue
            if variable is not None:
                value = environ.get(variable)
                if not value:
                    raise file.error(
                        ["accounts", index, part, "password_env"],
                        f"environment variable {variable} is not set or empty",
                    )
                found.append(_Secret(index, part, crypto.encrypt(value)))
            elif stored is None:
                missing.append((index, part))

    for index, part in missing:
        account = accounts[index]
        if prompt is None:
            raise file.error(
                ["accounts", index, part, "password_env"],
                "no password stored; name an environment variable here "
                "or apply from a terminal to type it",
            )
        value = prompt(f"{part} password of account {account.id}")
        if not value:
            raise file.error(
                ["accounts", index, part, "password_env"], "no password typed"
            )
        found.append(_Secret(index, part, crypto.encrypt(value)))
    return found


def _fill(row: Account, spec: AccountSpec) -> None:
    row.address = spec.address
    row.display_name = spec.display_name
    row.reply_address = spec.reply_address
    row.active = spec.active
    row.timeout = spec.timeout

    incoming = spec.incoming
    row.incoming_protocol = incoming.protocol
    row.incoming_host = incoming.host
    row.incoming_port = incoming.resolved_port
    row.incoming_encryption = incoming.encryption
    row.incoming_verify_tls = incoming.verify_tls
    row.root_folder = incoming.root_folder
    row.incoming_username = incoming.username
    row.after_receive = incoming.resolved_after_receive
    row.poll_interval = incoming.poll_interval

    outgoing = spec.outgoing
    row.outgoing_host = outgoing.host if outgoing else None
    row.outgoing_port = outgoing.resolved_port if outgoing else None
    row.outgoing_encryption = outgoing.encryption if outgoing else "starttls"
    row.outgoing_verify_tls = outgoing.verify_tls if outgoing else True
    row.outgoing_auth = outgoing.auth if outgoing else "none"
    row.outgoing_username = outgoing.username if outgoing else None
    row.validates_from = outgoing.validates_from if outgoing else False
    row.batch_size = outgoing.batch_size if outgoing else 0
    row.rate_limit = outgoing.rate_limit if outgoing else None

    row.attachments_allowed = spec.attachments.allowed
    row.attachment_types = list(spec.attachments.types)
    row.attachment_max_bytes = spec.attachments.max_bytes

    processing = spec.processing
    row.processing_active = processing.active
    row.confirm_receipt_template_id = processing.confirm_receipt
    row.create_case = processing.create_case
    row.attach_to_contact = processing.attach_to_contact
    row.create_lead = processing.create_lead
    row.route_to_owner = processing.route_to_owner
    row.reply_unassigned_template_id = processing.reply_unassigned
    row.delete_processed = processing.delete_processed
    row.add_source_info = processing.add_source_info

    row.assignment_map_id = spec.assignment.map
    row.default_owner_id = spec.assignment.default_owner
    row.default_workgroup = spec.assignment.default_workgroup


def _forget_unused_passwords(row: Account) -> None:
    # A password no login uses any more is a secret kept for nothing.
    if row.incoming_protocol == "none":
        row.incoming_password = None
    if row.outgoing_auth != "custom":
        row.outgoing_password = None


def account_to_dict(account: Account, *, is_default: bool) -> dict[str, Any]:
    """An account nested like its YAML; passwords only as set or not set."""
    receives = account.incoming_protocol != "none"
    sends = account.outgoing_host is not None
    return {
        "id": account.id,
        "address": account.address,
        "display_name": account.display_name,
        "reply_address": account.reply_address,
        "active": account.active,
        "default": is_default,
        "timeout": account.timeout,
        "incoming": {
            "protocol": account.incoming_protocol,
            "host": account.incoming_host,
            "port": account.incoming_port,
            "encryption": account.incoming_encryption if receives else None,
            "root_folder": account.root_folder,
            "username": account.incoming_username,
            "password": _set(account.incoming_password) if receives else None,
            "after_receive": account.after_receive if receives else None,
            "poll_interval": account.poll_interval if receives else None,
            "verify_tls": account.incoming_verify_tls if receives else None,
        },
        "outgoing": None
        if not sends
        else {
            "host": account.outgoing_host,
            "port": account.outgoing_port,
            "encryption": account.outgoing_encryption,
            "auth": account.outgoing_auth,
            "username": account.outgoing_username,
            "password": _set(account.outgoing_password)
            if account.outgoing_auth == "custom"
            else None,
            "validates_from": account.validates_from,
            "batch_size": account.batch_size,
            "rate_limit": account.rate_limit,
            "verify_tls": account.outgoing_verify_tls,
        },
        "attachments": {
            "allowed": account.attachments_allowed,
            "types": list(account.attachment_types or []),
            "max_bytes": account.attachment_max_bytes,
        },
        "processing": {
            "active": account.processing_active,
            "confirm_receipt": account.confirm_receipt_template_id,
            "create_case": account.create_case,
            "attach_to_contact": account.attach_to_contact,
            "create_lead": account.create_lead,
            "route_to_owner": account.route_to_owner,
            "reply_unassigned": account.reply_unassigned_template_id,
            "delete_processed": account.delete_processed,
            "add_source_info": account.add_source_info,
        },
        "assignment": {
            "map": account.assignment_map_id,
            "default_owner": account.default_owner_id,
            "default_workgroup": account.default_workgroup,
        },
    }


def _set(value: bytes | None) -> str:
    return "set" if value else "not set"
