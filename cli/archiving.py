"""``sysmail emails archive|restore``: take mail out of the lists and back.

The sender's ``emails`` group registers these two commands.
"""

from __future__ import annotations

import click

from shared import archive
from shared.db import session_scope


@click.command("archive")
@click.argument("email_ids", nargs=-1, required=True, type=int)
def archive_command(email_ids: tuple[int, ...]) -> None:
    """Archive emails: hidden from `emails list`, kept with their history.

    Mail still waiting or being sent cannot be archived; one such id, or an
    unknown one, leaves every email as it was.
    """
    with session_scope() as session:
        changed = archive.archive(session, email_ids)
    unchanged = len(set(email_ids)) - len(changed)
    click.echo(f"{len(changed)} archived, {unchanged} already archived")


@click.command("restore")
@click.argument("email_ids", nargs=-1, required=True, type=int)
def restore_command(email_ids: tuple[int, ...]) -> None:
    """Bring archived emails back to `emails list`."""
    with session_scope() as session:
        changed = archive.restore(session, email_ids)
    unchanged = len(set(email_ids)) - len(changed)
    click.echo(f"{len(changed)} restored, {unchanged} were not archived")
