"""``sysmail send`` and ``sysmail notify``: queue single emails."""

from __future__ import annotations

from pathlib import Path

import click

from cli.output import at_option, parse_at
from shared import outbox
from shared.db import session_scope
from shared.errors import ConfigError, NotFound
from shared.mail.compose import guess_type
from shared.models import Template, User
from shared.templating import render


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from exc


@click.command("send")
@click.option("--account", "account_id", help="Account that sends.")
@click.option("--as-user", "user_id", help="User who sends (their default account).")
@click.option("--to", "to", multiple=True, required=True, help="Recipient address.")
@click.option("--subject", required=True)
@click.option("--body", required=True, help="Plain-text body.")
@click.option("--html", "html_file", help="File with an HTML body.")
@click.option("--attach", "attach", multiple=True, help="File to attach.")
@at_option
def send(
    account_id: str | None,
    user_id: str | None,
    to: tuple[str, ...],
    subject: str,
    body: str,
    html_file: str | None,
    attach: tuple[str, ...],
    at_text: str | None,
) -> None:
    """Queue one email and print its id."""
    scheduled_at = parse_at(at_text)
    html = _read(html_file, "--html").decode("utf-8", "replace") if html_file else None
    files = [(Path(p).name, guess_type(p), _read(p, "--attach")) for p in attach]

    with session_scope() as session:
        account = outbox.resolve_account(session, account_id, user_id)
        user = session.get(User, user_id) if user_id else None
        email = outbox.queue_email(
            session,
            account=account,
            to=to,
            subject=subject,
            text=body,
            html=html,
            user=user,
            scheduled_at=scheduled_at,
            attachments=files,
        )
        email_id = email.id
    outbox.release([email_id])
    click.echo(email_id)


@click.group("notify")
def notify() -> None:
    """Send system notifications."""


@notify.command("password-changed")
@click.argument("user_id")
def password_changed(user_id: str) -> None:
    """Send the preferences' password-changed template to a user."""
    with session_scope() as session:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound(f"user {user_id} does not exist")
        if not user.email:
            raise ConfigError(f"user {user_id} has no email address")
        template_id = outbox.preferences(session).password_changed_template_id
        if template_id is None:
            raise ConfigError("the preferences name no password-changed template")
        template = session.get(Template, template_id)
        if template is None:
            raise NotFound(f"template {template_id} does not exist")
        rendered = render(
            template, {"user": {"id": user.id, "name": user.name, "email": user.email}}
        )
        # System mail goes from the installation's default account.
        account = outbox.resolve_account(session)
        email = outbox.queue_email(
            session,
            account=account,
            to=[user.email],
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            kind="notification",
        )
        email_id = email.id
    outbox.release([email_id])
    click.echo(email_id)


COMMANDS: list[click.Command] = [send, notify]
