"""``sysmail accounts``: system email accounts from YAML, and their state."""

from __future__ import annotations

import sys
from typing import Any

import click
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cli.output import emit, json_option, print_json
from cli.probe import test_command
from shared.configfiles import account_to_dict, apply_accounts, read
from shared.db import session_scope
from shared.errors import ConfigError, NotFound
from shared.models import Account, Campaign
from shared.preferences import find_preferences


@click.group("accounts")
def accounts() -> None:
    """System email accounts: shared mailboxes the application uses."""


@accounts.command("apply")
@click.argument("file")
def apply(file: str) -> None:
    """Create or update the accounts FILE declares; leave the others alone.

    Each account in the file is declared whole: a key left out takes its
    default. Passwords come from `password_env` (an environment variable
    read now); without it the stored password is kept, or, when there is
    none, typed at a hidden prompt if stdin is a terminal. A file with any
    error is rejected whole and nothing is written.
    """
    config = read(file)
    prompt = _hidden_prompt if _interactive() else None
    with session_scope() as session:
        tally = apply_accounts(session, config, prompt=prompt)
    click.echo(tally.summary())


def _interactive() -> bool:
    return sys.stdin.isatty()


def _hidden_prompt(question: str) -> str:
    return str(click.prompt(question, hide_input=True, err=True))


@accounts.command("list")
@json_option
def list_accounts(as_json: bool) -> None:
    """Every account with its servers and state."""
    with session_scope() as session:
        default = _default_id(session)
        rows = [
            _summary(account, account.id == default)
            for account in session.scalars(select(Account).order_by(Account.id))
        ]
    emit(
        rows,
        as_json,
        ["id", "address", "incoming", "outgoing", "active", "processing", "default"],
    )


@accounts.command("show")
@click.argument("account_id")
@json_option
def show(account_id: str, as_json: bool) -> None:
    """Every field of one account, nested like its YAML; passwords as set/not set."""
    with session_scope() as session:
        account = _get(session, account_id)
        data = account_to_dict(account, is_default=account.id == _default_id(session))
    if as_json:
        print_json(data)
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@accounts.command("delete")
@click.argument("account_id")
@click.option(
    "--force", is_flag=True, help="Delete it even if it is the default account."
)
def delete(account_id: str, force: bool) -> None:
    """Delete an account; its emails stay, without an account.

    The installation's default account is kept unless --force is given
    (automatic system mail then has no account until another is chosen).
    An account that campaigns were sent from cannot be deleted.
    """
    with session_scope() as session:
        account = _get(session, account_id)
        if account.id == _default_id(session) and not force:
            raise ConfigError(
                f"account {account_id} is the default account; "
                "choose another with `sysmail preferences set --default-account` "
                "or delete it with --force"
            )
        campaigns = session.scalar(
            select(func.count()).where(Campaign.account_id == account_id)
        )
        if campaigns:
            raise ConfigError(
                f"account {account_id} sent {campaigns} campaign(s) and is kept "
                "for their records; set active: false to retire it"
            )
        session.delete(account)
    click.echo(f"account {account_id} deleted")


accounts.add_command(test_command, "test")


def _get(session: Session, account_id: str) -> Account:
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound(f"account {account_id} does not exist")
    return account


def _default_id(session: Session) -> str | None:
    preferences = find_preferences(session)
    return preferences.default_account_id if preferences else None


def _summary(account: Account, is_default: bool) -> dict[str, Any]:
    incoming = None
    if account.incoming_protocol != "none":
        incoming = (
            f"{account.incoming_protocol} "
            f"{account.incoming_host}:{account.incoming_port}"
        )
    outgoing = None
    if account.outgoing_host:
        outgoing = f"smtp {account.outgoing_host}:{account.outgoing_port}"
    return {
        "id": account.id,
        "address": account.address,
        "incoming": incoming,
        "outgoing": outgoing,
        "active": account.active,
        "processing": account.processing_active,
        "default": is_default,
    }


COMMANDS = [accounts]
