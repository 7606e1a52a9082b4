"""``sysmail campaigns``: mass email to contacts or to a CSV file's rows."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from cli.output import at_option, emit, json_option, parse_at
from shared import campaigns as domain
from shared.db import session_scope
from shared.mail.compose import guess_type
from shared.models import utcnow


@click.group("campaigns")
def campaigns() -> None:
    """Mass email: one template rendered for many recipients."""


@campaigns.command("create")
@click.argument("campaign_id")
@click.option("--account", "account_id", required=True, help="Sending account.")
@click.option("--template", "template_id", required=True, help="Template to use.")
@click.option(
    "--contacts",
    "from_contacts",
    is_flag=True,
    help="Send to the directory's contacts (chosen again at send time).",
)
@click.option(
    "--business-account",
    "business_account_id",
    help="With --contacts: only the contacts of this business account.",
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Send to this file's rows: columns email, name and any fields.",
)
def create(
    campaign_id: str,
    account_id: str,
    template_id: str,
    from_contacts: bool,
    business_account_id: str | None,
    csv_path: Path | None,
) -> None:
    """Create a campaign and its audience; a bad CSV file changes nothing.

    A CSV file creates or updates contacts, matched by address: the columns
    other than email and name become the contact's fields.
    """
    if from_contacts == (csv_path is not None):
        raise click.UsageError("give exactly one of --contacts and --csv")
    if business_account_id is not None and not from_contacts:
        raise click.UsageError("--business-account goes with --contacts")

    with session_scope() as session:
        campaign = domain.create_campaign(
            session,
            campaign_id,
            account_id=account_id,
            template_id=template_id,
            csv_path=csv_path,
            business_account_id=business_account_id,
        )
        audience = campaign.audience
    if audience["source"] == "csv":
        click.echo(
            f"campaign {campaign_id} created: {len(audience['contact_ids'])} "
            f"contacts from {audience['file']}"
        )
    else:
        click.echo(f"campaign {campaign_id} created: contacts of the directory")


@campaigns.command("send")
@click.argument("campaign_id")
@at_option
@click.option(
    "--attach",
    "attach",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Attach this file to every email (repeatable).",
)
def send(campaign_id: str, at_text: str | None, attach: tuple[Path, ...]) -> None:
    """Queue one email per recipient, now or for later; only once.

    A progress line on stderr follows the queuing of a large campaign.
    """
    at = parse_at(at_text)
    attachments = [(p.name, guess_type(p.name), p.read_bytes()) for p in attach]

    with ExitStack() as stack:
        bars: list[Any] = []

        def progress(done: int, total: int) -> None:
            if not bars:
                bar = click.progressbar(length=total, label="queuing", file=sys.stderr)
                bars.append(stack.enter_context(bar))
            bars[0].update(done - bars[0].pos)

        with session_scope() as session:
            queued = domain.send_campaign(
                session,
                campaign_id,
                at=at,
                attachments=attachments,
                progress=progress,
                # Chunk by chunk, so sending starts while the rest is stored.
                # Only what is due goes out; the scheduler releases the rest.
                release=True,
            )

    skipped = ", ".join(f"{k} {v}" for k, v in queued.skipped.items() if v)
    when = f"at {at.isoformat()}" if at and at > utcnow() else "now"
    click.echo(
        f"campaign {campaign_id}: {len(queued.email_ids)} emails queued to go "
        f"{when}; skipped: {skipped or 'none'}"
    )


@campaigns.command("show")
@click.argument("campaign_id")
@json_option
def show(campaign_id: str, as_json: bool) -> None:
    """A campaign's emails counted by status, and its skips by reason."""
    with session_scope() as session:
        summary = domain.campaign_summary(session, campaign_id)
    emit(summary, as_json)


@campaigns.command("list")
@json_option
def list_(as_json: bool) -> None:
    """Every campaign with its progress."""
    with session_scope() as session:
        rows = domain.list_campaigns(session)
    emit(rows, as_json, ("id", "account", "template", "status", "emails"))


COMMANDS: list[click.Command] = [campaigns]
