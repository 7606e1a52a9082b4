"""``sysmail directory``: employees, users, contacts, business accounts and
assignment maps."""

from __future__ import annotations

from typing import Any

import click

from cli.output import emit, json_option
from shared.configfiles import apply_directory, directory_rows, read
from shared.db import session_scope

KINDS = {
    "employees": ["id", "name", "email", "active"],
    "users": ["id", "email", "name", "default_account"],
    "business-accounts": ["id", "name", "email"],
    "contacts": ["id", "name", "email", "business_account", "opted_out", "bounced"],
    "assignment-maps": ["id", "rules"],
}


@click.group("directory")
def directory() -> None:
    """Who mail is about and who handles it."""


@directory.command("apply")
@click.argument("file")
def apply(file: str) -> None:
    """Create or update what FILE declares; leave everything else alone.

    Top-level keys: employees, users, business_accounts, contacts,
    assignment_maps (any subset). References must exist in the database or
    in the same file; a file with any error is rejected whole.
    """
    config = read(file)
    with session_scope() as session:
        tally = apply_directory(session, config)
    click.echo(tally.summary())


@directory.command("list")
@click.argument("kind", type=click.Choice(list(KINDS)))
@json_option
def list_kind(kind: str, as_json: bool) -> None:
    """Every record of one KIND."""
    with session_scope() as session:
        rows = directory_rows(session, kind)
    if kind == "assignment-maps" and not as_json:
        rows = [{**row, "rules": _rules_text(row["rules"])} for row in rows]
    emit(rows, as_json, KINDS[kind])


def _rules_text(rules: list[dict[str, Any]]) -> str:
    parts = []
    for rule in rules:
        ((field, value),) = rule["when"].items()
        parts.append(f"{field}={value} -> {rule['owner']}")
    return "; ".join(parts) or "(no rules)"


COMMANDS = [directory]
