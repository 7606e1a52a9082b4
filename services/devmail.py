"""Development mail servers: Dovecot (IMAP, POP3) and an SMTP server, with TLS.

The tests and ``sysmail demo`` run them on 127.0.0.1 beside anything else the
machine runs: Dovecot from the project's own config in a run directory of its
own, SMTP from aiosmtpd in a thread. ``make_certificates`` writes a throwaway
certificate authority and a server certificate both of them present.
"""

from __future__ import annotations

import datetime
import grp
import ipaddress
import logging
import os
import pwd
import shutil
import signal
import socket
import ssl
import string
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from shared.errors import SysmailError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DOVECOT = "/usr/sbin/dovecot"
TEMPLATE = Path(__file__).parents[1] / "config" / "dovecot" / "dovecot.conf.template"


class DevMailError(SysmailError):
    """A development mail server could not be started or used."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise DevMailError(f"nothing listens on {HOST}:{port}") from None
            time.sleep(0.05)


@dataclass(frozen=True)
class Certificates:
    """PEM files: a certificate authority, and a server certificate it signed
    for 127.0.0.1 and localhost, with the server's key."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificates(directory: Path) -> Certificates:
    """Write a new CA and a server certificate into a directory."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sysmail test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    files = Certificates(
        ca_file=directory / "ca.pem",
        cert_file=directory / "cert.pem",
        key_file=directory / "key.pem",
    )
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.key_file.chmod(0o600)
    return files


@dataclass(frozen=True)
class _Identity:
    """Who Dovecot's own processes and the mailboxes run as."""

    internal_user: str
    login_user: str
    mail_user: str
    mail_group: str
    privileged_group: str


def _identity() -> _Identity:
    if os.geteuid() == 0:
        return _Identity("dovecot", "dovenull", "dovecot", "dovecot", "dovecot")
    # Unprivileged, every process of Dovecot runs as the user who started it.
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return _Identity(user, user, user, group, "")


class Dovecot:
    """A Dovecot of its own: IMAP and POP3 on 127.0.0.1, plain and TLS.

    Users log in with the passwords given to ``add_user``; their mailboxes are
    maildirs under the run directory. A port not given is picked free on the
    first ``start`` and kept across restarts.
    """

    def __init__(
        self,
        run_dir: Path,
        certificates: Certificates,
        *,
        imap_port: int | None = None,
        imaps_port: int | None = None,
        pop3_port: int | None = None,
        pop3s_port: int | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.certificates = certificates
        self.host = HOST
        self.imap_port = imap_port or 0
        self.imaps_port = imaps_port or 0
        self.pop3_port = pop3_port or 0
        self.pop3s_port = pop3s_port or 0
        self._passwords: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def ca_file(self) -> Path:
        return self.certificates.ca_file

    @property
    def config_file(self) -> Path:
        return self.run_dir / "dovecot.conf"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "dovecot.log"

    @property
    def stderr_file(self) -> Path:
        """What Dovecot says before its log is open: config errors."""
        return self.run_dir / "dovecot.stderr"

    @property
    def passwd_dir(self) -> Path:
        """One passwd file per login: Dovecot reads a new login's file at
        once, where it would notice a change to a shared file only within
        a second (to the time stamp)."""
        return self.run_dir / "passwd.d"

    @property
    def mail_dir(self) -> Path:
        return self.run_dir / "mail"

    def start(self) -> None:
        if not Path(DOVECOT).exists():
            raise DevMailError(
                f"{DOVECOT} is missing; run scripts/install-dovecot.sh first"
            )
        identity = _identity()
        self._prepare(identity)
        self.imap_port = self.imap_port or free_port()
        self.imaps_port = self.imaps_port or free_port()
        self.pop3_port = self.pop3_port or free_port()
        self.pop3s_port = self.pop3s_port or free_port()
        self.config_file.write_text(self._render(identity))

        with self.stderr_file.open("wb") as stderr:
            self._process = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            for port in self.ports:
                self._wait_for(port)
        except DevMailError:
            self.stop()
            raise
        log.info(
            "dovecot started: imap %s, imaps %s, pop3 %s, pop3s %s",
            self.imap_port,
            self.imaps_port,
            self.pop3_port,
            self.pop3s_port,
        )

    @property
    def ports(self) -> tuple[int, int, int, int]:
        return self.imap_port, self.imaps_port, self.pop3_port, self.pop3s_port

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.info("dovecot stopped")

    def _prepare(self, identity: _Identity) -> None:
        mail_user = pwd.getpwnam(identity.mail_user)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o755)
        if os.geteuid() == 0:
            _open_parents(self.run_dir)
        self.mail_dir.mkdir(exist_ok=True)
        os.chown(self.mail_dir, mail_user.pw_uid, mail_user.pw_gid)
        self.passwd_dir.mkdir(mode=0o750, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.passwd_dir, 0, mail_user.pw_gid)
        for login, password in self._passwords.items():
            self._write_passwd(login, password)

    def _render(self, identity: _Identity) -> str:
        template = string.Template(TEMPLATE.read_text())
        return template.substitute(
            base_dir=self.run_dir / "base",
            state_dir=self.run_dir / "state",
            log_path=self.log_file,
            instance_name=f"sysmail-{self.run_dir.name}",
            internal_user=identity.internal_user,
            internal_group=identity.mail_group,
            login_user=identity.login_user,
            privileged_group=identity.privileged_group,
            mail_user=identity.mail_user,
            mail_group=identity.mail_group,
            cert_file=self.certificates.cert_file,
            key_file=self.certificates.key_file,
            passwd_dir=self.passwd_dir,
            mail_dir=self.mail_dir,
            imap_port=self.imap_port,
            imaps_port=self.imaps_port,
            pop3_port=self.pop3_port,
            pop3s_port=self.pop3s_port,
        )

    def _wait_for(self, port: int) -> None:
        deadline = time.monotonic() + 15
        while True:
            if self._process is None or self._process.poll() is not None:
                raise DevMailError(f"dovecot exited: {self._failure()}")
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise DevMailError(
                        f"dovecot does not listen on {HOST}:{port}: {self._failure()}"
                    ) from None
                time.sleep(0.05)

    def _failure(self) -> str:
        said = ""
        for path in (self.stderr_file, self.log_file):
            if path.exists():
                said += path.read_text(errors="replace")
        lines = said.strip().splitlines()
        return lines[-1] if lines else "no message"

    def add_user(self, login: str, password: str) -> None:
        """Create a login (or change its password); its mailbox starts empty."""
        if any(c in login + password for c in ":/\n") or login.startswith("."):
            raise DevMailError(f"{login!r}: no ':', '/' or newline, please")
        with self._lock:
            self._passwords[login] = password
            self._write_passwd(login, password)
        if self._process is not None:
            self._wait_for_login(login)

    def _wait_for_login(self, login: str) -> None:
        # A changed password takes Dovecot up to a second to notice.
        deadline = time.monotonic() + 5
        while True:
            try:
                self.imap(login).logout()
                return
            except LoginError:
                if time.monotonic() > deadline:
                    raise DevMailError(f"dovecot does not accept {login}") from None
                time.sleep(0.1)

    def _write_passwd(self, login: str, password: str) -> None:
        # Written whole, then moved into place: Dovecot never reads half.
        scratch = self.passwd_dir / f".{login}.new"
        scratch.write_text(f"{login}:{{PLAIN}}{password}::::::\n")
        scratch.chmod(0o640)
        if os.geteuid() == 0:
            # Dovecot's auth process reads it as the mail user's group.
            os.chown(scratch, 0, grp.getgrnam(_identity().mail_group).gr_gid)
        scratch.replace(self.passwd_dir / login)

    def imap(self, login: str) -> IMAPClient:
        """An IMAP session of the user, over the plain port (STARTTLS unused)."""
        client = IMAPClient(HOST, self.imap_port, ssl=False, timeout=30)
        client.login(login, self._passwords[login])
        return client

    def create_folder(self, login: str, name: str) -> None:
        with self.imap(login) as client:
            if not client.folder_exists(name):
                client.create_folder(name)

    def append(self, login: str, raw: bytes, folder: str = "INBOX") -> None:
        """Deliver one message into a folder of the user, unread."""
        with self.imap(login) as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            client.append(folder, raw)

    def list(
        self, login: str, folder: str = "INBOX"
    ) -> list[tuple[int, tuple[bytes, ...]]]:
        """UID and flags of each message in a folder, oldest first."""
        with self.imap(login) as client:
            client.select_folder(folder, readonly=True)
            uids = client.search()
            found = client.fetch(uids, ["FLAGS"]) if uids else {}
            return [(uid, tuple(found[uid][b"FLAGS"])) for uid in sorted(found)]

    def remove(self) -> None:
        """Stop, and delete the run directory with every mailbox in it."""
        self.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _open_parents(path: Path) -> None:
    """Let Dovecot's users traverse every parent of the run directory.

    Only folders under the system's temporary directory are changed (a
    throwaway folder such as pytest's is 0700); elsewhere it says which.
    """
    temporary = Path(tempfile.gettempdir()).resolve()
    for parent in path.resolve().parents:
        if parent.stat().st_mode & 0o001:
            continue
        if temporary not in (parent, *parent.parents) or parent == temporary:
            raise DevMailError(
                f"{parent} is not traversable by Dovecot's users; chmod o+x it"
            )
        parent.chmod(parent.stat().st_mode | 0o001)


Received = tuple[str, list[str], bytes]


class _Recorder:
    """The SMTP handler: keeps what it receives, or fails as told."""

    def __init__(self, *, offer_auth: bool = True) -> None:
        self.messages: list[Received] = []
        self.failures: list[tuple[str, int, str]] = []
        self.arrived = threading.Condition()
        self.offer_auth = offer_auth

    def _failure(self, command: str) -> str | None:
        with self.arrived:
            for i, (at, code, text) in enumerate(self.failures):
                if at == command:
                    del self.failures[i]
                    return f"{code} {text}"
        return None

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        failure = self._failure("EHLO")
        if failure is None and session.ssl is not None:
            failure = self._failure("EHLO after STARTTLS")
        if failure is not None:
            return [failure]
        # With this hook, aiosmtpd leaves greeting the client to the handler.
        session.host_name = hostname
        if not self.offer_auth:
            return [r for r in responses if not r.startswith("250-AUTH")]
        return responses

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: Sequence[str],
    ) -> str:
        failure = self._failure("RCPT")
        if failure is not None:
            return failure
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        failure = self._failure("DATA")
        if failure is not None:
            return failure
        data = envelope.original_content or b""
        with self.arrived:
            self.messages.append(
                (str(envelope.mail_from), list(envelope.rcpt_tos), bytes(data))
            )
            self.arrived.notify_all()
        return "250 Message accepted for delivery"


def _quiet_auth_warning(record: logging.LogRecord) -> bool:
    # aiosmtpd warns of its own choices on every login; this server made them.
    message = record.getMessage()
    return not (
        "auth_require_tls == False" in message
        or "Session.login_data is deprecated" in message
    )


class SmtpServer:
    """An SMTP server in a thread: STARTTLS offered, implicit TLS on a second
    port, AUTH PLAIN and LOGIN against ``users``, required when there are
    users. Received messages are kept in ``messages``.

    Without ``certificates`` it offers no STARTTLS and no TLS port; with
    ``offer_auth`` off its EHLO does not list AUTH and no login is required.
    """

    def __init__(
        self,
        certificates: Certificates | None = None,
        users: dict[str, str] | None = None,
        *,
        port: int | None = None,
        ssl_port: int | None = None,
        implicit_tls: bool = True,
        offer_auth: bool = True,
    ) -> None:
        self.host = HOST
        self.port = port or free_port()
        self.ssl_port = 0
        self.users: dict[str, str] = dict(users or {})
        self.certificates = certificates
        self.offer_auth = offer_auth
        self._recorder = _Recorder(offer_auth=offer_auth)
        self._controllers: list[Controller] = []
        if certificates is not None and implicit_tls:
            self.ssl_port = ssl_port or free_port()

    @property
    def messages(self) -> list[Received]:
        with self._recorder.arrived:
            return list(self._recorder.messages)

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        """The messages received, once there are at least ``count``."""
        recorder = self._recorder
        with recorder.arrived:
            if not recorder.arrived.wait_for(
                lambda: len(recorder.messages) >= count, timeout
            ):
                raise DevMailError(
                    f"SMTP server got {len(recorder.messages)} of {count} messages"
                )
            return list(recorder.messages)

    def fail_next(
        self, code: int, text: str, count: int = 1, *, at: str = "DATA"
    ) -> None:
        """Answer the next ``count`` DATA (RCPT, EHLO) commands with this reply.

        ``at="EHLO after STARTTLS"`` spares the first EHLO of a connection and
        answers the one the client sends once TLS is up.
        """
        with self._recorder.arrived:
            self._recorder.failures.extend([(at, code, text)] * count)

    def start(self) -> None:
        # Logging in over plain connections is this server's choice, not news.
        warnings.filterwarnings(
            "ignore", "Requiring AUTH while not requiring TLS", UserWarning
        )
        aiosmtpd_log = logging.getLogger("mail.log")
        if _quiet_auth_warning not in aiosmtpd_log.filters:
            aiosmtpd_log.addFilter(_quiet_auth_warning)
        tls = self.certificates.server_context() if self.certificates else None
        plain = Controller(
            self._recorder,
            hostname=HOST,
            port=self.port,
            tls_context=tls,
            **self._smtp_parameters(),
        )
        self._controllers.append(plain)
        if self.ssl_port and tls is not None:
            implicit = Controller(
                self._recorder,
                hostname=HOST,
                port=self.ssl_port,
                ssl_context=tls,
                **self._smtp_parameters(),
            )
            self._controllers.append(implicit)
        for controller in self._controllers:
            controller.start()
        log.info("SMTP server started: port %s, TLS port %s", self.port, self.ssl_port)

    def stop(self) -> None:
        for controller in self._controllers:
            controller.stop()
        self._controllers.clear()

    def _smtp_parameters(self) -> dict[str, Any]:
        if not self.users or not self.offer_auth:
            return {"auth_require_tls": False}
        return {
            "authenticator": self._authenticate,
            "auth_required": True,
            # Tests log in over plain connections too (encryption "none").
            "auth_require_tls": False,
        }

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if mechanism not in ("PLAIN", "LOGIN") or not isinstance(
            auth_data, LoginPassword
        ):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode()
        password = auth_data.password.decode()
        success = login in self.users and self.users[login] == password
        return AuthResult(success=success, handled=False)
