"""``sysmail emails``: list, show, process now, retry, cancel, archive."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy import select

from cli.archiving import archive_command, restore_command
from cli.output import emit, json_option
from shared import outbox
from shared.db import session_scope
from shared.delivery import deliver
from shared.errors import NotFound
from shared.models import Attachment, Email, EmailStatusChange, EmailTrace
from shared.models.emails import STATUSES

LIST_COLUMNS = ("id", "direction", "status", "account", "to", "subject", "created")


@click.group("emails")
def emails() -> None:
    """Emails in both directions: status, history, trace."""


@emails.command("list")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--direction", type=click.Choice(["in", "out"]))
@click.option("--account", "account_id")
@click.option("--include-archived", is_flag=True, help="Also archived emails.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@json_option
def list_emails(
    status: str | None,
    direction: str | None,
    account_id: str | None,
    include_archived: bool,
    limit: int,
    as_json: bool,
) -> None:
    """The newest emails first."""
    query = select(Email).order_by(Email.id.desc()).limit(limit)
    if status:
        query = query.where(Email.status == status)
    if direction:
        query = query.where(Email.direction == direction)
    if account_id:
        query = query.where(Email.account_id == account_id)
    if not include_archived:
        query = query.where(Email.archived.is_(False))
    with session_scope() as session:
        rows = [_summary(e) for e in session.scalars(query)]
    emit(rows, as_json, LIST_COLUMNS)


def _summary(email: Email) -> dict[str, Any]:
    return {
        "id": email.id,
        "direction": email.direction,
        "status": email.status,
        "archived": email.archived,
        "account": email.account_id,
        "from": email.from_address,
        "to": email.to_address,
        "subject": email.subject,
        "created": email.created_at,
    }


@emails.command("show")
@click.argument("email_id", type=int)
@json_option
def show(email_id: int, as_json: bool) -> None:
    """One email: fields, status history, trace and attachments."""
    with session_scope() as session:
        email = session.get(Email, email_id)
        if email is None:
            raise NotFound(f"email {email_id} does not exist")
        record = _details(email)
        record["history"] = [
            {
                "at": c.at,
                "from": c.from_status,
                "to": c.to_status,
                "reason": c.reason,
                "smtp_code": c.smtp_code,
                "server_reply": c.server_reply,
            }
            for c in session.scalars(
                select(EmailStatusChange)
                .where(EmailStatusChange.email_id == email_id)
                .order_by(EmailStatusChange.at, EmailStatusChange.id)
            )
        ]
        record["trace"] = [
            {"at": t.at, "stage": t.stage, "decision": t.decision, "detail": t.detail}
            for t in session.scalars(
                select(EmailTrace)
                .where(EmailTrace.email_id == email_id)
                .order_by(EmailTrace.at, EmailTrace.id)
            )
        ]
        record["attachments"] = [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "dropped_reason": a.dropped_reason,
            }
            for a in session.scalars(
                select(Attachment)
                .where(Attachment.email_id == email_id)
                .order_by(Attachment.id)
            )
        ]
    if as_json:
        emit(record, True)
        return
    _print_details(record)


def _details(email: Email) -> dict[str, Any]:
    return {
        "id": email.id,
        "direction": email.direction,
        "kind": email.kind,
        "status": email.status,
        "archived": email.archived,
        "attempts": email.attempts,
        "account": email.account_id,
        "message_id": email.message_id,
        "in_reply_to": email.in_reply_to,
        "references": email.references,
        "from": email.from_address,
        "from_name": email.from_name,
        "to": email.to_addresses,
        "reply_to": email.reply_to,
        "subject": email.subject,
        "scheduled_at": email.scheduled_at,
        "created_at": email.created_at,
        "sent_at": email.sent_at,
        "received_at": email.received_at,
        "last_error": email.last_error,
        "campaign": email.campaign_id,
        "contact": email.contact_id,
        "case": email.case_id,
        "lead": email.lead_id,
    }


def _print_details(record: dict[str, Any]) -> None:
    lists = ("history", "trace", "attachments")
    emit({k: v for k, v in record.items() if k not in lists}, False)
    for change in record["history"]:
        reply = ""
        if change["smtp_code"] is not None or change["server_reply"]:
            reply = f" [{change['smtp_code'] or '-'} {change['server_reply'] or ''}]"
        click.echo(
            f"  {change['at']:%Y-%m-%d %H:%M:%S}  {change['from'] or '-'} -> "
            f"{change['to']}: {change['reason']}{reply.rstrip()}"
        )
    for step in record["trace"]:
        click.echo(
            f"  {step['at']:%Y-%m-%d %H:%M:%S}  {step['stage']}: "
            f"{step['decision']} {step['detail']}".rstrip()
        )
    for a in record["attachments"]:
        dropped = f" DROPPED: {a['dropped_reason']}" if a["dropped_reason"] else ""
        click.echo(f"  attachment {a['filename']} ({a['size']} bytes){dropped}")


@emails.command("process")
@click.argument("email_id", type=int)
def process(email_id: int) -> None:
    """Send an email now, here, even a failed one past its attempts."""
    outcome = deliver(email_id, manual=True)
    click.echo(f"email {email_id}: {outcome.status}: {outcome.detail}")


@emails.command("retry")
@click.argument("email_id", type=int)
def retry(email_id: int) -> None:
    """Put a failed or canceled email back in the queue, attempts reset."""
    with session_scope() as session:
        outbox.retry(session, email_id)
    outbox.release([email_id])
    click.echo(f"email {email_id}: pending_processing")


@emails.command("cancel")
@click.argument("email_id", type=int)
def cancel(email_id: int) -> None:
    """Cancel a pending email: it will not be sent."""
    with session_scope() as session:
        outbox.cancel(session, email_id)
    click.echo(f"email {email_id}: canceled")


emails.add_command(archive_command)
emails.add_command(restore_command)

COMMANDS: list[click.Command] = [emails]
