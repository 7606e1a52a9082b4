"""``sysmail demo``: a mail server pair, a demo account, a few sample emails,
and the whole system running on them, so a newcomer sees it work at once."""

from __future__ import annotations

import email
import email.policy
import logging
import secrets
import threading
from pathlib import Path

from services.devmail import Dovecot, SmtpServer, make_certificates
from services.supervisor import supervise
from shared.configfiles import (
    apply_accounts,
    apply_directory,
    apply_templates,
    parse_text,
)
from shared.db import session_scope
from shared.models import Account

log = logging.getLogger(__name__)

LOGIN = "demo@sysmail.test"

TEMPLATES = """
templates:
  - id: demo-ack
    subject: "We received your message: {{ email.subject }}"
    text: |
      Hello {{ contact.name or "there" }},
      thank you for writing. Your message is case {{ case.id }}.
  - id: demo-unassigned
    subject: "Re: {{ email.subject }}"
    text: "We received your message and will route it to the right person."
"""

DIRECTORY = """
employees:
  - {id: demo-alice, name: Alice Agent, email: alice@sysmail.test}
  - {id: demo-bruno, name: Bruno Billing, email: bruno@sysmail.test}
business_accounts:
  - {id: demo-acme, name: ACME Ltd, email: info@acme.test}
contacts:
  - {id: demo-carol, name: Carol Customer, email: carol@acme.test,
     business_account: demo-acme}
assignment_maps:
  - id: demo-map
    rules:
      - {when: {subject_contains: invoice}, owner: demo-bruno}
"""

ACCOUNT = """
accounts:
  - id: demo
    address: {login}
    display_name: sysmail demo
    incoming: {{protocol: imap, host: 127.0.0.1, port: {imaps}, encryption: ssl,
               root_folder: INBOX, username: {login},
               password_env: DEMO_PASSWORD, after_receive: mark_read,
               poll_interval: 5}}
    outgoing: {{host: 127.0.0.1, port: {smtp}, encryption: starttls,
               auth: incoming}}
    processing: {{active: true, confirm_receipt: demo-ack, create_case: true,
                 attach_to_contact: true, create_lead: true,
                 route_to_owner: true, reply_unassigned: demo-unassigned,
                 add_source_info: true}}
    assignment: {{map: demo-map, default_owner: demo-alice}}
"""

SAMPLES = [
    (
        "Carol Customer <carol@acme.test>",
        "Question about invoice 2041",
        "Hello, the invoice lists two licences; we bought one.",
        "",
    ),
    (
        "Nina New <nina@prospect.test>",
        "Interested in your product",
        "Could you send me a price list?",
        "",
    ),
    (
        "Carol Customer <carol@acme.test>",
        "Out of office",
        "I am away until Monday.",
        "Auto-Submitted: auto-replied\r\n",
    ),
]


def _sample(n: int, sender: str, subject: str, body: str, extra: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {LOGIN}\r\nSubject: {subject}\r\n"
        f"Message-ID: <demo-{n}-{secrets.token_hex(6)}@sysmail.test>\r\n"
        f"{extra}\r\n{body}\r\n"
    ).encode()


def _announce(smtp: SmtpServer, stop: threading.Event) -> None:
    """Print every email the demo's SMTP server receives."""
    seen = 0
    while not stop.wait(0.5):
        messages = smtp.messages
        for _, rcpts, data in messages[seen:]:
            parsed = email.message_from_bytes(data, policy=email.policy.default)
            print(
                f"demo mail server got: to {', '.join(rcpts)}: {parsed['Subject']}",
                flush=True,
            )
        seen = len(messages)


def run_demo(run_dir: Path, stop: threading.Event) -> int:
    """Start the servers, configure the demo, run everything until stopped."""
    password = secrets.token_urlsafe(16)
    certificates = make_certificates(run_dir / "tls")
    dovecot = Dovecot(run_dir / "dovecot", certificates)
    smtp = SmtpServer(certificates, {LOGIN: password})
    dovecot.start()
    smtp.start()
    try:
        dovecot.add_user(LOGIN, password)
        account = ACCOUNT.format(login=LOGIN, imaps=dovecot.imaps_port, smtp=smtp.port)
        with session_scope() as session:
            apply_templates(session, parse_text(TEMPLATES, "demo templates"))
            apply_directory(session, parse_text(DIRECTORY, "demo directory"))
            apply_accounts(
                session,
                parse_text(account, "demo account"),
                environ={"DEMO_PASSWORD": password},
            )
        for n, sample in enumerate(SAMPLES):
            dovecot.append(LOGIN, _sample(n, *sample))
        print(
            f"demo: IMAP 127.0.0.1:{dovecot.imaps_port}, SMTP 127.0.0.1:{smtp.port};"
            f" {len(SAMPLES)} sample emails in {LOGIN}. Watch with"
            " `sysmail cases list`, `sysmail leads list`, `sysmail emails list`."
            " Ctrl-C stops.",
            flush=True,
        )
        announcer = threading.Thread(target=_announce, args=(smtp, stop), daemon=True)
        announcer.start()
        return supervise(stop, {"SYSMAIL_CA_FILE": str(certificates.ca_file)})
    finally:
        _deactivate()
        smtp.stop()
        dovecot.stop()


def _deactivate() -> None:
    """The demo's servers end with it; so does polling its account."""
    with session_scope() as session:
        account = session.get(Account, "demo")
        if account is not None:
            account.active = False
