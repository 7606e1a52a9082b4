"""``sysmail db``: the schema."""

from __future__ import annotations

import click

from shared import migrate


@click.group("db")
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def upgrade() -> None:
    """Create the database if needed and migrate it to the newest schema."""
    migrate.upgrade()
    click.echo(f"database at revision {migrate.current()}")


COMMANDS = [db]
