"""Entry point of ``sysmail``: every command group, and how errors end."""

from __future__ import annotations

import sys
from typing import Any

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from cli import (
    accounts,
    campaigns,
    database,
    directory,
    emails,
    preferences,
    records,
    runtime,
    sending,
    templates,
)
from config.settings import SettingsError, get_settings
from shared.errors import SysmailError


class Sysmail(click.Group):
    """Turns sysmail's own errors into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (SysmailError, SettingsError) as exc:
            click.echo(f"sysmail: error: {exc}", err=True)
            sys.exit(1)
        except OperationalError as exc:
            url = make_url(get_settings().database_url)
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else ""
            click.echo(
                f"sysmail: error: cannot use PostgreSQL at {url.host}:{url.port}"
                f"/{url.database}: {reason} (is it running? `make up` starts it)",
                err=True,
            )
            sys.exit(1)


@click.group(cls=Sysmail)
def cli() -> None:
    """Run a company's system email accounts."""


for module in (
    database,
    accounts,
    preferences,
    templates,
    directory,
    sending,
    campaigns,
    emails,
    records,
    runtime,
):
    for command in module.COMMANDS:
        cli.add_command(command)


def main() -> None:
    cli(prog_name="sysmail")


if __name__ == "__main__":
    main()
