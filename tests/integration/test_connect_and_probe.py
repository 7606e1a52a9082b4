"""The account Test and the connections under it, against real servers:
Dovecot for IMAP and POP3, aiosmtpd for SMTP, both with the run's own CA."""

from __future__ import annotations

import email
import json
import os
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cli.main import cli as sysmail
from cli.probe import test_command as accounts_test
from config.settings import reset_settings
from services.devmail import Certificates, Dovecot, SmtpServer, free_port
from shared.crypto import encrypt
from shared.db import session_scope
from shared.errors import PermanentFailure, TemporaryFailure
from shared.mail.connect import open_imap, open_pop3, open_smtp
from shared.models import Account
from shared.probe import ProbeReport, check_account
from tests.fixtures.mailservers import unique_login

PASSWORD = "mailbox-secret-1"


@pytest.fixture
def mailbox(dovecot: Dovecot) -> str:
    login = unique_login("support")
    dovecot.add_user(login, PASSWORD)
    dovecot.append(login, b"Subject: first\r\n\r\nhello\r\n")
    return login


def imap_port(dovecot: Dovecot, encryption: str) -> int:
    return dovecot.imaps_port if encryption == "ssl" else dovecot.imap_port


def pop3_port(dovecot: Dovecot, encryption: str) -> int:
    return dovecot.pop3s_port if encryption == "ssl" else dovecot.pop3_port


def smtp_port(smtp: SmtpServer, encryption: str) -> int:
    return smtp.ssl_port if encryption == "ssl" else smtp.port


def make_account(
    login: str,
    *,
    protocol: str = "imap",
    incoming_port: int | None = None,
    incoming_encryption: str = "ssl",
    password: str = PASSWORD,
    smtp: SmtpServer | None = None,
    outgoing_encryption: str = "starttls",
    **fields: Any,
) -> Account:
    """An account stored the way `accounts apply` stores it."""
    smtp_login, smtp_password = next(iter(smtp.users.items())) if smtp else (None, None)
    values: dict[str, Any] = {
        "id": "support",
        "address": login,
        "display_name": "Support Desk",
        "reply_address": "noreply@example.test",
        "incoming_protocol": protocol,
        "incoming_host": "127.0.0.1",
        "incoming_port": incoming_port,
        "incoming_encryption": incoming_encryption,
        "root_folder": "INBOX" if protocol == "imap" else None,
        "incoming_username": login,
        "incoming_password": encrypt(password),
        "outgoing_host": "127.0.0.1",
        "outgoing_port": smtp_port(smtp, outgoing_encryption) if smtp else None,
        "outgoing_encryption": outgoing_encryption,
        "outgoing_auth": "custom",
        "outgoing_username": smtp_login,
        "outgoing_password": encrypt(smtp_password) if smtp_password else None,
        "timeout": 10,
    }
    values.update(fields)
    account = Account(**values)
    with session_scope() as session:
        session.add(account)
    return account


def steps(report: ProbeReport, role: str) -> list[tuple[str, bool]]:
    server = next(s for s in report.servers if s.role == role)
    return [(s.name, s.ok) for s in server.steps]


def failure(report: ProbeReport, role: str) -> tuple[str, str]:
    server = next(s for s in report.servers if s.role == role)
    failed = server.failed_step
    assert failed is not None, f"{role} did not fail"
    return failed.name, failed.detail


@pytest.fixture
def no_extra_ca() -> Iterator[None]:
    """Trust the system's certificate authorities only, not the run's CA."""
    saved = os.environ.pop("SYSMAIL_CA_FILE")
    reset_settings()
    yield
    os.environ["SYSMAIL_CA_FILE"] = saved
    reset_settings()


@pytest.mark.parametrize("encryption", ["ssl", "starttls", "none"])
def test_a_good_imap_account_passes_every_step(
    dovecot: Dovecot, mailbox: str, smtp_server: SmtpServer, encryption: str
) -> None:
    account = make_account(
        mailbox,
        incoming_port=imap_port(dovecot, encryption),
        incoming_encryption=encryption,
        smtp=smtp_server,
    )

    report = check_account(account)

    assert report.ok
    expected_tls = [] if encryption == "none" else [("TLS", True)]
    assert steps(report, "incoming") == [
        ("connect", True),
        *expected_tls,
        ("login", True),
        ("root folder", True),
    ]
    assert steps(report, "outgoing") == [
        ("connect", True),
        ("EHLO", True),
        ("TLS", True),
        ("login", True),
    ]


@pytest.mark.parametrize("encryption", ["ssl", "starttls", "none"])
def test_a_good_pop3_account_passes_every_step(
    dovecot: Dovecot, mailbox: str, smtp_server: SmtpServer, encryption: str
) -> None:
    account = make_account(
        mailbox,
        protocol="pop3",
        incoming_port=pop3_port(dovecot, encryption),
        incoming_encryption=encryption,
        smtp=smtp_server,
        outgoing_encryption="ssl",
    )

    report = check_account(account)

    assert report.ok
    assert [name for name, _ in steps(report, "incoming")][-2:] == ["login", "STAT"]
    assert steps(report, "outgoing") == [
        ("connect", True),
        ("TLS", True),
        ("EHLO", True),
        ("login", True),
    ]


def test_imap_connection_is_logged_in_and_reads_the_mailbox(
    dovecot: Dovecot, mailbox: str
) -> None:
    account = make_account(mailbox, incoming_port=dovecot.imaps_port)

    with open_imap(account) as client:
        client.select_folder("INBOX", readonly=True)
        assert len(client.search()) == 1


def test_pop3_connection_with_stls_sees_the_message(
    dovecot: Dovecot, mailbox: str
) -> None:
    account = make_account(
        mailbox,
        protocol="pop3",
        incoming_port=dovecot.pop3_port,
        incoming_encryption="starttls",
    )

    client = open_pop3(account)
    try:
        assert client.stat()[0] == 1
    finally:
        client.quit()


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_wrong_incoming_password_fails_at_login(
    dovecot: Dovecot, mailbox: str, protocol: str
) -> None:
    port = dovecot.imaps_port if protocol == "imap" else dovecot.pop3s_port
    account = make_account(
        mailbox, protocol=protocol, incoming_port=port, password="wrong-password-9"
    )

    report = check_account(account)

    assert not report.ok
    name, detail = failure(report, "incoming")
    assert name == "login"
    assert "wrong-password-9" not in detail
    assert steps(report, "incoming")[:2] == [("connect", True), ("TLS", True)]


def test_a_wrong_smtp_password_fails_at_login_with_the_servers_code(
    dovecot: Dovecot, mailbox: str, smtp_server: SmtpServer
) -> None:
    account = make_account(
        mailbox,
        incoming_port=dovecot.imaps_port,
        smtp=smtp_server,
        outgoing_password=encrypt("not-the-smtp-password"),
    )

    report = check_account(account)

    assert steps(report, "incoming")[-1] == ("root folder", True)
    name, detail = failure(report, "outgoing")
    assert name == "login"
    assert detail.startswith("535")
    with pytest.raises(PermanentFailure) as raised:
        open_smtp(account)
    assert raised.value.code == 535
    assert "not-the-smtp-password" not in str(raised.value)


def test_a_missing_root_folder_fails_at_root_folder(
    dovecot: Dovecot, mailbox: str
) -> None:
    account = make_account(
        mailbox, incoming_port=dovecot.imaps_port, root_folder="INBOX/Support"
    )

    report = check_account(account)

    assert failure(report, "incoming") == (
        "root folder",
        "folder 'INBOX/Support' does not exist",
    )


def test_an_existing_subfolder_passes_as_root_folder(
    dovecot: Dovecot, mailbox: str
) -> None:
    dovecot.create_folder(mailbox, "Support")
    account = make_account(
        mailbox, incoming_port=dovecot.imaps_port, root_folder="Support"
    )

    report = check_account(account)

    assert steps(report, "incoming")[-1] == ("root folder", True)


def test_a_closed_port_fails_at_connect_as_a_temporary_failure(
    dovecot: Dovecot, mailbox: str
) -> None:
    closed = free_port()
    account = make_account(
        mailbox, incoming_port=closed, outgoing_port=free_port(), outgoing_auth="none"
    )

    report = check_account(account)

    assert failure(report, "incoming") == ("connect", "connection refused")
    assert failure(report, "outgoing") == ("connect", "connection refused")
    with pytest.raises(TemporaryFailure, match=f"^connect: 127.0.0.1:{closed}: "):
        open_imap(account)


@pytest.mark.parametrize(
    ("protocol", "encryption"),
    [("imap", "ssl"), ("imap", "starttls"), ("pop3", "ssl"), ("pop3", "starttls")],
)
def test_an_untrusted_server_certificate_fails_at_tls(
    dovecot: Dovecot, mailbox: str, no_extra_ca: None, protocol: str, encryption: str
) -> None:
    port = (imap_port if protocol == "imap" else pop3_port)(dovecot, encryption)
    account = make_account(
        mailbox, protocol=protocol, incoming_port=port, incoming_encryption=encryption
    )

    report = check_account(account)

    name, detail = failure(report, "incoming")
    assert name == "TLS"
    assert "certificate" in detail


@pytest.mark.parametrize("encryption", ["ssl", "starttls"])
def test_an_untrusted_smtp_certificate_fails_at_tls(
    smtp_server: SmtpServer, no_extra_ca: None, encryption: str
) -> None:
    account = make_account(
        "sender@example.test",
        protocol="none",
        smtp=smtp_server,
        outgoing_encryption=encryption,
    )

    report = check_account(account)

    name, detail = failure(report, "outgoing")
    assert name == "TLS"
    assert "certificate" in detail


def test_verify_tls_off_accepts_an_untrusted_certificate(
    dovecot: Dovecot, mailbox: str, no_extra_ca: None
) -> None:
    account = make_account(
        mailbox, incoming_port=dovecot.imaps_port, incoming_verify_tls=False
    )

    report = check_account(account)

    assert steps(report, "incoming")[-1] == ("root folder", True)


def test_a_send_only_account_skips_incoming_and_tests_outgoing(
    smtp_server: SmtpServer,
) -> None:
    account = make_account(
        "sender@example.test",
        protocol="none",
        smtp=smtp_server,
        outgoing_encryption="ssl",
    )

    report = check_account(account)

    assert report.ok
    incoming = next(s for s in report.servers if s.role == "incoming")
    assert incoming.skipped is not None
    assert incoming.steps == []


def test_send_to_delivers_a_test_email_from_the_account(
    smtp_server: SmtpServer,
) -> None:
    account = make_account("support@example.test", protocol="none", smtp=smtp_server)

    report = check_account(account, send_to="admin@example.test")

    assert steps(report, "outgoing")[-1] == ("send", True)
    [(mail_from, rcpt_tos, data)] = smtp_server.wait_for(1)
    assert (mail_from, rcpt_tos) == ("support@example.test", ["admin@example.test"])
    message = email.message_from_bytes(data)
    assert message["From"] == "Support Desk <support@example.test>"
    assert message["Reply-To"] == "noreply@example.test"
    assert "support" in message["Subject"]


def test_a_refused_test_email_fails_at_send_with_the_servers_reply(
    smtp_server: SmtpServer,
) -> None:
    account = make_account("support@example.test", protocol="none", smtp=smtp_server)
    smtp_server.fail_next(550, "mailbox unavailable", at="RCPT")

    report = check_account(account, send_to="nobody@example.test")

    assert failure(report, "outgoing") == ("send", "550 mailbox unavailable")
    assert smtp_server.messages == []


def test_an_smtp_server_saying_try_later_is_a_temporary_failure(
    smtp_server: SmtpServer,
) -> None:
    account = make_account("support@example.test", protocol="none", smtp=smtp_server)
    smtp_server.fail_next(451, "try again later")

    report = check_account(account, send_to="admin@example.test")

    assert failure(report, "outgoing") == ("send", "451 try again later")


@pytest.fixture
def smtp_without_starttls() -> Iterator[SmtpServer]:
    """No certificates, so its EHLO does not offer STARTTLS."""
    server = SmtpServer(None, {"sysmail@example.test": "smtp-secret"})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def smtp_without_auth(tls_ca: Certificates) -> Iterator[SmtpServer]:
    """STARTTLS offered, AUTH not: its EHLO does not list it."""
    server = SmtpServer(
        tls_ca, {"sysmail@example.test": "smtp-secret"}, offer_auth=False
    )
    server.start()
    yield server
    server.stop()


def cli_outgoing_test(smtp: SmtpServer) -> tuple[Result, list[tuple[str, bool]]]:
    """`sysmail accounts test --json` of a send-only STARTTLS account of that
    server, with the outgoing steps it reported."""
    make_account(
        "support@example.test",
        protocol="none",
        smtp=smtp,
        outgoing_encryption="starttls",
    )
    result = CliRunner().invoke(sysmail, ["accounts", "test", "support", "--json"])
    servers = json.loads(result.stdout)["servers"]
    [outgoing] = [s for s in servers if s["role"] == "outgoing"]
    return result, [(s["step"], s["ok"]) for s in outgoing["steps"]]


def test_an_smtp_server_refusing_ehlo_fails_at_ehlo(
    smtp_server: SmtpServer,
) -> None:
    smtp_server.fail_next(554, "no service for you", at="EHLO")

    result, outgoing = cli_outgoing_test(smtp_server)

    assert result.exit_code == 1
    assert outgoing == [("connect", True), ("EHLO", False)]
    [summary] = result.stderr.splitlines()
    assert summary.endswith("failed at EHLO: 554 no service for you")


def test_an_ehlo_refused_after_starttls_fails_at_ehlo_not_at_tls(
    smtp_server: SmtpServer,
) -> None:
    smtp_server.fail_next(554, "no service for you", at="EHLO after STARTTLS")

    result, outgoing = cli_outgoing_test(smtp_server)

    assert result.exit_code == 1
    assert outgoing == [
        ("connect", True),
        ("EHLO", True),
        ("TLS", True),
        ("EHLO", False),
    ]
    [summary] = result.stderr.splitlines()
    assert summary.endswith("failed at EHLO: 554 no service for you")


def test_a_server_without_starttls_fails_at_tls_when_the_account_asks_for_it(
    smtp_without_starttls: SmtpServer,
) -> None:
    result, outgoing = cli_outgoing_test(smtp_without_starttls)

    assert result.exit_code == 1
    assert outgoing == [("connect", True), ("EHLO", True), ("TLS", False)]
    [summary] = result.stderr.splitlines()
    assert summary.endswith("failed at TLS: STARTTLS is not offered")


def test_a_server_without_auth_fails_at_login_when_the_account_has_one(
    smtp_without_auth: SmtpServer,
) -> None:
    result, outgoing = cli_outgoing_test(smtp_without_auth)

    assert result.exit_code == 1
    assert outgoing == [
        ("connect", True),
        ("EHLO", True),
        ("TLS", True),
        ("login", False),
    ]
    [summary] = result.stderr.splitlines()
    assert summary.endswith("failed at login: AUTH is not offered")


def test_cli_prints_every_step_and_exits_zero_when_all_pass(
    dovecot: Dovecot, mailbox: str, smtp_server: SmtpServer
) -> None:
    make_account(mailbox, incoming_port=dovecot.imaps_port, smtp=smtp_server)

    result = CliRunner().invoke(accounts_test, ["support"])

    assert result.exit_code == 0, result.output
    assert f"incoming: IMAP 127.0.0.1:{dovecot.imaps_port} (ssl)" in result.output
    assert "root folder  ok" in result.output
    assert PASSWORD not in result.output


def test_cli_exits_non_zero_and_names_the_failed_step(
    dovecot: Dovecot, mailbox: str, smtp_server: SmtpServer
) -> None:
    make_account(
        mailbox,
        incoming_port=dovecot.imaps_port,
        password="wrong-password-9",
        smtp=smtp_server,
    )

    result = CliRunner().invoke(sysmail, ["accounts", "test", "support"])

    assert result.exit_code == 1
    assert re.search(r"^  login +FAILED: \[AUTHENTICATIONFAILED\]", result.stdout, re.M)
    assert re.search(r"^  login +ok$", result.stdout, re.M), "SMTP login passes"
    [summary] = result.stderr.splitlines()
    assert summary.startswith("sysmail: error: account support: incoming IMAP")
    assert "failed at login" in summary
    assert "wrong-password-9" not in result.output


def test_cli_json_reports_each_server_and_step(
    smtp_server: SmtpServer,
) -> None:
    make_account("support@example.test", protocol="none", smtp=smtp_server)

    result = CliRunner().invoke(
        accounts_test, ["support", "--json", "--send-to", "admin@example.test"]
    )

    assert result.exit_code == 0, result.output
    assert '"step": "send"' in result.output
    assert len(smtp_server.wait_for(1)) == 1


def test_cli_rejects_an_unknown_account(smtp_server: SmtpServer) -> None:
    result = CliRunner().invoke(accounts_test, ["nosuch"])

    assert result.exit_code != 0
    assert "nosuch" in str(result.exception)


def test_the_sysmail_command_says_an_unknown_account_in_one_line() -> None:
    result = CliRunner().invoke(sysmail, ["accounts", "test", "nosuch"])

    assert result.exit_code == 1
    assert result.stderr == "sysmail: error: account 'nosuch' does not exist\n"
    assert result.stdout == ""


def test_a_server_that_never_answers_times_out_as_a_temporary_failure() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        account = make_account(
            "support@example.test",
            protocol="none",
            outgoing_port=silent.getsockname()[1],
            outgoing_auth="none",
            timeout=1,
        )

        with pytest.raises(TemporaryFailure, match=r"^connect: .*timed out$"):
            open_smtp(account)
