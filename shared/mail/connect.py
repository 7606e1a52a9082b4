"""Connections to an account's mail servers, opened, secured and logged in.

Each failure is a TemporaryFailure (worth trying later: refused, dropped,
timed out, 4xx) or a PermanentFailure (certificate, login, 5xx). Its message
starts with the step that failed and names the server:
``login: 127.0.0.1:993: [AUTHENTICATIONFAILED] Authentication failed.``
Passwords never appear in a message or a log line.
"""

from __future__ import annotations

import imaplib
import logging
import poplib
import smtplib
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from imapclient import IMAPClient
from imapclient.exceptions import CapabilityError, LoginError

from config.settings import get_settings
from shared.crypto import decrypt
from shared.errors import (
    DeliveryError,
    PermanentFailure,
    SysmailError,
    TemporaryFailure,
)
from shared.models import Account

log = logging.getLogger(__name__)

CONNECT = "connect"
TLS = "TLS"
EHLO = "EHLO"
LOGIN = "login"

_DEFAULT_PORTS = {
    ("imap", "ssl"): 993,
    ("imap", "starttls"): 143,
    ("imap", "none"): 143,
    ("pop3", "ssl"): 995,
    ("pop3", "starttls"): 110,
    ("pop3", "none"): 110,
    ("smtp", "ssl"): 465,
    ("smtp", "starttls"): 587,
    ("smtp", "none"): 25,
}


@dataclass
class Progress:
    """How far one connection got: the steps passed and the one under way.

    A step taken twice (SMTP's EHLO, again under STARTTLS) is listed once.
    When an open_* function raises, ``current`` is the step that failed.
    """

    done: list[str] = field(default_factory=list)
    current: str | None = None


def default_port(protocol: str, encryption: str) -> int:
    return _DEFAULT_PORTS[(protocol, encryption)]


def incoming_server(account: Account) -> tuple[str, int]:
    """Host and port of the account's IMAP or POP3 server."""
    if account.incoming_protocol == "none" or not account.incoming_host:
        raise PermanentFailure(f"connect: account {account.id} has no incoming server")
    port = account.incoming_port or default_port(
        account.incoming_protocol, account.incoming_encryption
    )
    return account.incoming_host, port


def outgoing_server(account: Account) -> tuple[str, int]:
    """Host and port of the account's SMTP server."""
    if not account.outgoing_host:
        raise PermanentFailure(f"connect: account {account.id} has no outgoing server")
    port = account.outgoing_port or default_port("smtp", account.outgoing_encryption)
    return account.outgoing_host, port


def tls_context(verify: bool) -> ssl.SSLContext:
    """The system's CAs plus SYSMAIL_CA_FILE; no checks when verify is off.

    Loading the CAs costs milliseconds, more than sending an email, so a
    context is made once per setting and shared by every connection.
    """
    key = (verify, get_settings().ca_file)
    with _contexts_lock:
        if key not in _contexts:
            _contexts[key] = _new_tls_context(*key)
        return _contexts[key]


_contexts: dict[tuple[bool, str | None], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def _new_tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise PermanentFailure(
                f"TLS: cannot load CA file {ca_file}: {exc}"
            ) from exc
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@contextmanager
def step(name: str, server: str, progress: Progress) -> Iterator[None]:
    """Run one step, turning library errors into sysmail's, named by step."""
    progress.current = name
    try:
        yield
    except DeliveryError:
        raise
    except ssl.SSLCertVerificationError as exc:
        progress.current = TLS
        raise PermanentFailure(f"TLS: {server}: {exc.verify_message}") from exc
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
        progress.current = TLS
        raise TemporaryFailure(f"TLS: {server}: connection closed") from exc
    except ssl.SSLError as exc:
        progress.current = TLS
        raise PermanentFailure(f"TLS: {server}: {exc.reason or exc}") from exc
    except smtplib.SMTPResponseException as exc:
        raise _smtp_failure(name, server, exc.smtp_code, exc.smtp_error) from exc
    except smtplib.SMTPServerDisconnected as exc:
        raise TemporaryFailure(f"{name}: {server}: {_text(exc)}") from exc
    except TimeoutError as exc:
        raise TemporaryFailure(f"{name}: {server}: timed out") from exc
    except ConnectionRefusedError as exc:
        raise TemporaryFailure(f"{name}: {server}: connection refused") from exc
    except smtplib.SMTPException as exc:
        # Before OSError, its base: no reply code, so the client gave up.
        raise PermanentFailure(f"{name}: {server}: {_text(exc)}") from exc
    except OSError as exc:
        raise TemporaryFailure(f"{name}: {server}: {exc.strerror or exc}") from exc
    except imaplib.IMAP4.abort as exc:
        raise TemporaryFailure(f"{name}: {server}: {_text(exc)}") from exc
    except (imaplib.IMAP4.error, poplib.error_proto) as exc:
        raise PermanentFailure(f"{name}: {server}: {_text(exc)}") from exc
    if name not in progress.done:
        progress.done.append(name)
    progress.current = None


def _smtp_failure(
    name: str, server: str, code: int, reply: bytes | str
) -> DeliveryError:
    text = _text(reply)
    message = f"{name}: {server}: {code} {text}"
    if 400 <= code < 500:
        return TemporaryFailure(message, code=code, reply=text)
    return PermanentFailure(message, code=code, reply=text)


def _text(value: object) -> str:
    if isinstance(value, BaseException) and value.args:
        value = value.args[0]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    text = str(value)
    # imapclient's LoginError carries the repr of the server's bytes.
    if text[:2] in ("b'", 'b"') and text[-1:] == text[1]:
        return text[2:-1]
    return text


def _password(token: bytes | None, server: str) -> str:
    if token is None:
        raise PermanentFailure(f"login: {server}: no password is stored")
    try:
        return decrypt(token)
    except SysmailError as exc:
        raise PermanentFailure(f"login: {server}: {exc}") from exc


def open_imap(account: Account, progress: Progress | None = None) -> IMAPClient:
    """An IMAP connection of the account, logged in, no folder selected."""
    progress = progress or Progress()
    host, port = incoming_server(account)
    server = f"{host}:{port}"
    encryption = account.incoming_encryption
    context = tls_context(account.incoming_verify_tls)

    log.debug("account %s: IMAP connect %s (%s)", account.id, server, encryption)
    with step(CONNECT, server, progress):
        client = IMAPClient(
            host,
            port,
            ssl=encryption == "ssl",
            ssl_context=context,
            timeout=account.timeout,
        )
    if encryption == "ssl":
        progress.done.append(TLS)

    try:
        if encryption == "starttls":
            log.debug("account %s: IMAP STARTTLS %s", account.id, server)
            with step(TLS, server, progress):
                _imap_starttls(client, context, server)
        username = account.incoming_username or ""
        password = _password(account.incoming_password, server)
        log.debug("account %s: IMAP LOGIN %s as %s", account.id, server, username)
        with step(LOGIN, server, progress):
            _imap_login(client, username, password, server)
    except BaseException:
        _quietly_close_imap(client)
        raise
    return client


def _imap_starttls(client: IMAPClient, context: ssl.SSLContext, server: str) -> None:
    try:
        client.starttls(context)
    except CapabilityError as exc:
        raise PermanentFailure(f"TLS: {server}: STARTTLS is not offered") from exc


def _imap_login(client: IMAPClient, username: str, password: str, server: str) -> None:
    try:
        client.login(username, password)
    except LoginError as exc:
        raise PermanentFailure(f"login: {server}: {_text(exc)}") from exc


def _quietly_close_imap(client: IMAPClient) -> None:
    # The connection failed already; its own close errors would hide why.
    try:
        client.logout()
    except Exception:
        try:
            client.shutdown()
        except Exception:
            log.debug("IMAP connection could not be closed cleanly")


def open_pop3(account: Account, progress: Progress | None = None) -> poplib.POP3:
    """A POP3 connection of the account, logged in (TRANSACTION state)."""
    progress = progress or Progress()
    host, port = incoming_server(account)
    server = f"{host}:{port}"
    encryption = account.incoming_encryption
    context = tls_context(account.incoming_verify_tls)

    log.debug("account %s: POP3 connect %s (%s)", account.id, server, encryption)
    client: poplib.POP3
    with step(CONNECT, server, progress):
        if encryption == "ssl":
            client = poplib.POP3_SSL(
                host, port, timeout=account.timeout, context=context
            )
        else:
            client = poplib.POP3(host, port, timeout=account.timeout)
    if encryption == "ssl":
        progress.done.append(TLS)

    try:
        if encryption == "starttls":
            log.debug("account %s: POP3 STLS %s", account.id, server)
            with step(TLS, server, progress):
                _pop3_stls(client, context, server)
        username = account.incoming_username or ""
        password = _password(account.incoming_password, server)
        log.debug("account %s: POP3 USER/PASS %s as %s", account.id, server, username)
        with step(LOGIN, server, progress):
            _pop3_login(client, username, password, server)
    except BaseException:
        _quietly_close_pop3(client)
        raise
    return client


def _pop3_stls(client: poplib.POP3, context: ssl.SSLContext, server: str) -> None:
    try:
        client.stls(context)
    except poplib.error_proto as exc:
        raise PermanentFailure(f"TLS: {server}: STLS refused: {_text(exc)}") from exc


def _pop3_login(client: poplib.POP3, username: str, password: str, server: str) -> None:
    try:
        client.user(username)
        client.pass_(password)
    except poplib.error_proto as exc:
        raise PermanentFailure(f"login: {server}: {_text(exc)}") from exc


def _quietly_close_pop3(client: poplib.POP3) -> None:
    # QUIT would commit deletions; a failed login has none, so just close.
    try:
        client.close()
    except OSError:
        log.debug("POP3 connection could not be closed cleanly")


def open_smtp(account: Account, progress: Progress | None = None) -> smtplib.SMTP:
    """An SMTP connection of the account: EHLO done, logged in per its auth."""
    progress = progress or Progress()
    host, port = outgoing_server(account)
    server = f"{host}:{port}"
    encryption = account.outgoing_encryption
    context = tls_context(account.outgoing_verify_tls)

    log.debug("account %s: SMTP connect %s (%s)", account.id, server, encryption)
    client: smtplib.SMTP
    with step(CONNECT, server, progress):
        if encryption == "ssl":
            client = smtplib.SMTP_SSL(
                host, port, timeout=account.timeout, context=context
            )
        else:
            client = smtplib.SMTP(host, port, timeout=account.timeout)
    if encryption == "ssl":
        progress.done.append(TLS)

    try:
        with step(EHLO, server, progress):
            _smtp_ehlo(client, server)
        if encryption == "starttls":
            log.debug("account %s: SMTP STARTTLS %s", account.id, server)
            with step(TLS, server, progress):
                _smtp_starttls(client, context, server)
            # Asked again: under TLS a server may offer more, AUTH above all.
            with step(EHLO, server, progress):
                _smtp_ehlo(client, server)
        credentials = _smtp_credentials(account, server)
        if credentials is not None:
            log.debug(
                "account %s: SMTP AUTH %s as %s", account.id, server, credentials[0]
            )
            with step(LOGIN, server, progress):
                _smtp_login(client, *credentials, server=server)
    except BaseException:
        _quietly_close_smtp(client)
        raise
    return client


def _smtp_ehlo(client: smtplib.SMTP, server: str) -> None:
    code, reply = client.ehlo()
    if code != 250:
        raise _smtp_failure(EHLO, server, code, reply)


def _smtp_starttls(client: smtplib.SMTP, context: ssl.SSLContext, server: str) -> None:
    if not client.has_extn("starttls"):
        raise PermanentFailure(f"TLS: {server}: STARTTLS is not offered")
    try:
        client.starttls(context=context)
    except smtplib.SMTPResponseException as exc:
        raise _smtp_failure(TLS, server, exc.smtp_code, exc.smtp_error) from exc


def _smtp_credentials(account: Account, server: str) -> tuple[str, str] | None:
    if account.outgoing_auth == "incoming":
        username = account.incoming_username or ""
        return username, _password(account.incoming_password, server)
    if account.outgoing_auth == "custom":
        username = account.outgoing_username or ""
        return username, _password(account.outgoing_password, server)
    return None


def _smtp_login(
    client: smtplib.SMTP, username: str, password: str, *, server: str
) -> None:
    try:
        client.login(username, password)
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentFailure(f"login: {server}: AUTH is not offered") from exc
    except smtplib.SMTPAuthenticationError as exc:
        raise _smtp_failure(LOGIN, server, exc.smtp_code, exc.smtp_error) from exc
    except smtplib.SMTPException as exc:
        if isinstance(exc, smtplib.SMTPResponseException):
            raise
        # Raised when no AUTH mechanism of the server is one smtplib knows.
        raise PermanentFailure(f"login: {server}: {_text(exc)}") from exc


def _quietly_close_smtp(client: smtplib.SMTP) -> None:
    # The connection failed already; its own close errors would hide why.
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()
