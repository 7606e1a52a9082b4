"""``sysmail templates``: message templates with placeholders."""

from __future__ import annotations

import click
from sqlalchemy import select

from cli.output import emit, json_option
from shared.configfiles import apply_templates, read, template_to_dict
from shared.db import session_scope
from shared.errors import NotFound
from shared.models import Template


@click.group("templates")
def templates() -> None:
    """Templates for receipts, replies, notifications and campaigns."""


@templates.command("apply")
@click.argument("file")
def apply(file: str) -> None:
    """Create or update the templates FILE declares; leave the others alone.

    Each template is checked first (syntax, no include or import); a file
    with any error is rejected whole and nothing is written.
    """
    config = read(file)
    with session_scope() as session:
        tally = apply_templates(session, config)
    click.echo(tally.summary())


@templates.command("list")
@json_option
def list_templates(as_json: bool) -> None:
    """Every template with its subject."""
    with session_scope() as session:
        rows = [
            {"id": t.id, "subject": t.subject, "html": t.html is not None}
            for t in session.scalars(select(Template).order_by(Template.id))
        ]
    emit(rows, as_json, ["id", "subject", "html"])


@templates.command("show")
@click.argument("template_id")
@json_option
def show(template_id: str, as_json: bool) -> None:
    """One template, every part."""
    with session_scope() as session:
        template = session.get(Template, template_id)
        if template is None:
            raise NotFound(f"template {template_id} does not exist")
        data = template_to_dict(template)
    if as_json:
        emit(data, as_json)
        return
    click.echo(f"id: {data['id']}\nsubject: {data['subject']}\n\n--- text")
    click.echo(data["text"].rstrip("\n"))
    if data["html"] is not None:
        click.echo("--- html")
        click.echo(data["html"].rstrip("\n"))


COMMANDS = [templates]
