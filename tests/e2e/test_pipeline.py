"""The whole system as processes: mail in creates a case and a receipt goes
out; mail queued from the command line is delivered; a changed account takes
effect without a restart; SIGTERM or Ctrl-C stops everything cleanly."""

from __future__ import annotations

import email
import email.policy
import signal
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from shared.db import session_scope
from shared.models import Case, Email
from tests.e2e.conftest import wait_until

Run = Callable[..., subprocess.CompletedProcess[str]]

TEMPLATES = """
templates:
  - id: ack
    subject: "Received: {{ email.subject }}"
    text: "Your message is case {{ case.id }}."
"""
DIRECTORY = """
employees:
  - {id: alice, name: Alice, email: alice@example.test, active: true}
contacts:
  - {id: carol, name: Carol, email: carol@customer.test}
"""


def account_yaml(login: str, dovecot: Any, smtp_port: int) -> str:
    return f"""
accounts:
  - id: support
    address: {login}
    display_name: Support
    reply_address: replies@example.test
    default: true
    incoming: {{protocol: imap, host: 127.0.0.1, port: {dovecot.imaps_port},
               encryption: ssl, root_folder: INBOX, username: {login},
               password_env: SUPPORT_PASSWORD, after_receive: mark_read,
               poll_interval: 1, verify_tls: true}}
    outgoing: {{host: 127.0.0.1, port: {smtp_port}, encryption: starttls,
               auth: incoming, verify_tls: true}}
    processing: {{active: true, confirm_receipt: ack, create_case: true,
                 attach_to_contact: true}}
    assignment: {{default_owner: alice}}
"""


def apply(sysmail: Run, tmp_path: Path, kind: str, text: str, **env: str) -> None:
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text)
    done = sysmail(kind, "apply", str(path), env=env)
    assert done.returncode == 0, done.stderr


def incoming_message(subject: str) -> tuple[str, bytes]:
    message_id = f"<{uuid.uuid4()}@customer.test>"
    raw = (
        "From: Carol <carol@customer.test>\r\n"
        "To: support@example.test\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {message_id}\r\n"
        "Date: Thu, 03 Dec 2026 10:00:00 +0000\r\n"
        "\r\n"
        "My printer is on fire.\r\n"
    ).encode()
    return message_id, raw


def test_mail_in_creates_a_case_and_a_receipt_reaches_the_smtp_server(
    sysmail: Run,
    running_system: subprocess.Popen[bytes],
    dovecot: Any,
    smtp_server: Any,
    tmp_path: Path,
) -> None:
    login = f"support-{uuid.uuid4().hex[:8]}@example.test"
    dovecot.add_user(login, "s3cret-imap")
    smtp_server.users[login] = "s3cret-imap"
    apply(sysmail, tmp_path, "templates", TEMPLATES)
    apply(sysmail, tmp_path, "directory", DIRECTORY)
    apply(
        sysmail,
        tmp_path,
        "accounts",
        account_yaml(login, dovecot, smtp_server.port),
        SUPPORT_PASSWORD="s3cret-imap",
    )
    message_id, raw = incoming_message("Printer on fire")

    dovecot.append(login, raw)

    def receipt() -> Any:
        for _mail_from, rcpts, data in smtp_server.messages:
            parsed = email.message_from_bytes(data, policy=email.policy.default)
            if parsed["In-Reply-To"] == message_id:
                return parsed, rcpts
        return None

    sent, rcpts = wait_until(receipt, timeout=60)
    assert rcpts == ["carol@customer.test"]
    assert sent["Auto-Submitted"] == "auto-replied"
    assert sent["Reply-To"] == "replies@example.test"
    with session_scope() as session:
        case = session.scalars(select(Case)).one()
        assert case.subject == "Printer on fire"
        assert case.contact_id == "carol"
        incoming = session.scalars(
            select(Email).where(Email.message_id == message_id)
        ).one()
        assert incoming.case_id == case.id
    assert f"case {case.id}" in sent.get_body(("plain",)).get_content()
    assert wait_until(lambda: b"\\Seen" in dovecot.list(login)[0][1], timeout=10)


def test_mail_queued_from_the_command_line_is_delivered_and_config_changes_apply_live(
    sysmail: Run,
    running_system: subprocess.Popen[bytes],
    dovecot: Any,
    smtp_server: Any,
    tmp_path: Path,
) -> None:
    login = f"support-{uuid.uuid4().hex[:8]}@example.test"
    smtp_server.users[login] = "pw-send"
    apply(sysmail, tmp_path, "templates", TEMPLATES)
    apply(sysmail, tmp_path, "directory", DIRECTORY)
    apply(
        sysmail,
        tmp_path,
        "accounts",
        account_yaml(login, dovecot, smtp_server.port),
        SUPPORT_PASSWORD="pw-send",
    )

    queued = sysmail(
        "send",
        "--account",
        "support",
        "--to",
        "dave@customer.test",
        "--subject",
        "Your order",
        "--body",
        "It has shipped.",
    )

    assert queued.returncode == 0, queued.stderr
    ((_mail_from, rcpts, data),) = wait_until(lambda: smtp_server.messages, timeout=60)
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert rcpts == ["dave@customer.test"]
    assert parsed["Subject"].startswith("Your order") and "[#" in parsed["Subject"]
    assert parsed.get_body(("plain",)).get_content().strip() == "It has shipped."

    # Change the display name in the database; the running sender picks it up.
    changed = account_yaml(login, dovecot, smtp_server.port).replace(
        "display_name: Support", "display_name: Support Desk"
    )
    apply(sysmail, tmp_path, "accounts", changed, SUPPORT_PASSWORD="pw-send")
    again = sysmail(
        "send",
        "--account",
        "support",
        "--to",
        "dave@customer.test",
        "--subject",
        "Second",
        "--body",
        "Again.",
    )
    assert again.returncode == 0, again.stderr
    messages = wait_until(
        lambda: smtp_server.messages if len(smtp_server.messages) == 2 else None,
        timeout=60,
    )
    second = email.message_from_bytes(messages[1][2], policy=email.policy.default)
    assert second["From"].addresses[0].display_name == "Support Desk"


def children_of(pid: int) -> list[int]:
    """Processes whose parent is pid, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize(
    "stop", [signal.SIGTERM, signal.SIGINT], ids=["term", "ctrl-c"]
)
def test_a_stop_signal_stops_the_whole_system_cleanly(
    running_system: subprocess.Popen[bytes],
    system_env: dict[str, str],
    stop: signal.Signals,
) -> None:
    health = f"http://127.0.0.1:{system_env['SYSMAIL_ADMIN_PORT']}/health"

    def admin_answers() -> bool:
        try:
            return httpx.get(health, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(admin_answers, timeout=30)
    children = children_of(running_system.pid)
    assert len(children) >= 3

    running_system.send_signal(stop)

    assert running_system.wait(60) == 0
    assert not admin_answers()
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
