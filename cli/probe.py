"""``sysmail accounts test ID``: the account Test, step by step."""

from __future__ import annotations

import click

from cli.output import json_option, print_json
from shared.db import session_scope
from shared.errors import ConfigError, NotFound, SysmailError
from shared.models import Account
from shared.probe import ProbeReport, ServerReport, check_account


@click.command("test")
@click.argument("account_id")
@click.option(
    "--send-to", metavar="ADDR", help="Also send a test email to this address."
)
@json_option
def test_command(account_id: str, send_to: str | None, as_json: bool) -> None:
    """Test the account's incoming and outgoing servers."""
    if send_to is not None and not _looks_like_address(send_to):
        raise ConfigError(f"--send-to: {send_to!r} is not an email address")
    with session_scope() as session:
        account = session.get(Account, account_id)
        if account is None:
            raise NotFound(f"account {account_id!r} does not exist")
        session.expunge(account)

    report = check_account(account, send_to)

    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    if not report.ok:
        raise SysmailError(_summary(report))


def _looks_like_address(value: str) -> bool:
    local, at, domain = value.partition("@")
    return bool(local and at and "." in domain) and not any(c.isspace() for c in value)


def _print_report(report: ProbeReport) -> None:
    click.echo(f"account {report.account_id}")
    for server in report.servers:
        _print_server(server)


def _print_server(server: ServerReport) -> None:
    if server.skipped:
        click.echo(f"{server.role}: skipped ({server.skipped})")
        return
    click.echo(
        f"{server.role}: {server.protocol} {server.server} ({server.encryption})"
    )
    width = max(len(s.name) for s in server.steps)
    for result in server.steps:
        verdict = "ok" if result.ok else f"FAILED: {result.detail}"
        click.echo(f"  {result.name.ljust(width)}  {verdict}")


def _summary(report: ProbeReport) -> str:
    failures = [
        f"{s.role} {s.protocol} {s.server} failed at {f.name}: {f.detail}"
        for s in report.servers
        if (f := s.failed_step) is not None
    ]
    return f"account {report.account_id}: " + "; ".join(failures)
