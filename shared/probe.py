"""The account Test: can sysmail reach, secure and log in to its servers?

Incoming: connect, TLS, login, then the root folder (IMAP) or STAT (POP3).
Outgoing: connect, TLS, EHLO, login (SMTP AUTH), and on request a short test
email sent straight over SMTP. Each step is reported with the server's words
when it fails; the steps after a failure are not tried. A server the account
does not have is skipped (a test email needs the outgoing one).
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from typing import Any

from shared.errors import DeliveryError, PermanentFailure
from shared.mail.connect import (
    Progress,
    incoming_server,
    open_imap,
    open_pop3,
    open_smtp,
    outgoing_server,
    step,
)
from shared.models import Account

log = logging.getLogger(__name__)

ROOT_FOLDER = "root folder"
STAT = "STAT"
SEND = "send"


@dataclass(frozen=True)
class StepResult:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class ServerReport:
    """What happened with one server of the account."""

    role: str
    protocol: str
    server: str
    encryption: str
    steps: list[StepResult] = field(default_factory=list)
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    @property
    def failed_step(self) -> StepResult | None:
        return next((s for s in self.steps if not s.ok), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "protocol": self.protocol,
            "server": self.server,
            "encryption": self.encryption,
            "ok": self.ok,
            "skipped": self.skipped,
            "steps": [
                {"step": s.name, "ok": s.ok, "detail": s.detail} for s in self.steps
            ],
        }


@dataclass
class ProbeReport:
    account_id: str
    servers: list[ServerReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.servers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "account": self.account_id,
            "ok": self.ok,
            "servers": [s.to_dict() for s in self.servers],
        }


def check_account(account: Account, send_to: str | None = None) -> ProbeReport:
    """Test the account's servers; with ``send_to``, also send a test email."""
    report = ProbeReport(account.id)
    report.servers.append(_check_incoming(account))
    report.servers.append(_check_outgoing(account, send_to))
    log.info("account %s: test %s", account.id, "passed" if report.ok else "failed")
    return report


def _check_incoming(account: Account) -> ServerReport:
    protocol = account.incoming_protocol
    if protocol == "none":
        return ServerReport(
            "incoming", "-", "-", "-", skipped="send-only account: no incoming server"
        )
    report = ServerReport(
        "incoming",
        protocol.upper(),
        _server_name(account, incoming=True),
        account.incoming_encryption,
    )
    progress = Progress()
    try:
        if protocol == "imap":
            _check_imap(account, report.server, progress)
        else:
            _check_pop3(account, report.server, progress)
    except DeliveryError as exc:
        _record(account, report, progress, exc)
    else:
        _record(account, report, progress, None)
    return report


def _check_imap(account: Account, server: str, progress: Progress) -> None:
    client = open_imap(account, progress)
    try:
        folder = account.root_folder or "INBOX"
        with step(ROOT_FOLDER, server, progress):
            if not client.folder_exists(folder):
                raise PermanentFailure(
                    f"{ROOT_FOLDER}: {server}: folder {folder!r} does not exist"
                )
            client.select_folder(folder, readonly=True)
    finally:
        _close(client.logout, client.shutdown)


def _check_pop3(account: Account, server: str, progress: Progress) -> None:
    client = open_pop3(account, progress)
    try:
        with step(STAT, server, progress):
            client.stat()
    finally:
        _close(client.quit, client.close)


def _check_outgoing(account: Account, send_to: str | None) -> ServerReport:
    if not account.outgoing_host and send_to is None:
        return ServerReport(
            "outgoing",
            "-",
            "-",
            "-",
            skipped="receive-only account: no outgoing server",
        )
    report = ServerReport(
        "outgoing",
        "SMTP",
        _server_name(account, incoming=False),
        account.outgoing_encryption,
    )
    progress = Progress()
    try:
        client = open_smtp(account, progress)
        try:
            if send_to is not None:
                with step(SEND, report.server, progress):
                    _send_test_email(client, account, send_to, report.server)
        finally:
            _close(client.quit, client.close)
    except DeliveryError as exc:
        _record(account, report, progress, exc)
    else:
        _record(account, report, progress, None)
    return report


def _send_test_email(
    client: smtplib.SMTP, account: Account, send_to: str, server: str
) -> None:
    message = EmailMessage()
    message["From"] = formataddr((account.display_name, account.address))
    message["To"] = send_to
    if account.reply_address:
        message["Reply-To"] = account.reply_address
    message["Subject"] = f"sysmail test of account {account.id}"
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=account.address.rpartition("@")[2])
    message.set_content(
        f"This email was sent by the Test of the sysmail account {account.id}.\n"
        "It shows that the account's outgoing server accepts its mail.\n"
    )
    try:
        client.send_message(message, from_addr=account.address, to_addrs=[send_to])
    except smtplib.SMTPRecipientsRefused as exc:
        code, reply = exc.recipients[send_to]
        # Refused recipients are the one SMTP error without a single reply code.
        raise smtplib.SMTPResponseException(code, reply) from exc
    log.info("account %s: test email sent to %s via %s", account.id, send_to, server)


def _close(polite: Callable[[], object], abrupt: Callable[[], object]) -> None:
    # The test's verdict is known by now; a goodbye that fails changes nothing.
    try:
        polite()
    except Exception:
        with suppress(OSError):
            abrupt()


def _record(
    account: Account,
    report: ServerReport,
    progress: Progress,
    error: DeliveryError | None,
) -> None:
    report.steps.extend(StepResult(name, True) for name in progress.done)
    if error is None:
        return
    name = progress.current or "connect"
    report.steps.append(StepResult(name, False, _detail(str(error), report.server)))
    log.info(
        "account %s: %s %s %s failed at %s: %s",
        account.id,
        report.role,
        report.protocol,
        report.server,
        name,
        error,
    )


def _detail(message: str, server: str) -> str:
    # Messages read "step: host:port: what happened"; the report has the rest.
    _, marker, rest = message.partition(f": {server}: ")
    return rest if marker else message


def _server_name(account: Account, *, incoming: bool) -> str:
    try:
        host, port = incoming_server(account) if incoming else outgoing_server(account)
    except DeliveryError:
        return "(not configured)"
    return f"{host}:{port}"
