"""Sending over SMTP: pooled connections per account, and one transaction.

A sender worker's threads share one pool. A thread takes a connection for
a chunk of emails and gives it back. One given back moments ago is used as
it is: an RSET before every chunk would cost a round trip for nothing. One
idle for longer than CHECK_AFTER seconds is checked with RSET first (and
replaced when the server dropped it). One that has carried the account's
``batch_size`` emails is closed and replaced, mid-chunk if need be. Pool
keys include a fingerprint of the account's server settings, so a changed
account never reuses an old connection or login.
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.errors import DeliveryError, PermanentFailure, TemporaryFailure
from shared.mail.connect import open_smtp, outgoing_server
from shared.models import Account

log = logging.getLogger(__name__)

# Idle connections older than this are closed, not reused: servers drop
# idle clients, typically after one to five minutes.
IDLE_SECONDS = 30.0
# Idle for less than this, a connection is trusted without an RSET: a server
# that dropped it so soon would fail one email with a temporary failure,
# which is retried.
CHECK_AFTER = 5.0
_ACCEPTED = 250
_RCPT_OK = (250, 251)


class ConnectionDropped(TemporaryFailure):
    """The server had closed the connection before MAIL: nothing was sent."""


@dataclass
class Connection:
    client: smtplib.SMTP
    server: str
    sent: int = 0
    idle_since: float = 0.0


@dataclass(frozen=True)
class Accepted:
    """The server's reply to the end of DATA, recipients it refused, and
    when it came."""

    code: int
    reply: str
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Lease:
    """A thread's hold on one of the pool's connections for a chunk.

    ``connection`` is None once a failure closed it (the next email takes a
    fresh one) or when none could be opened (``trouble`` says why).
    """

    connection: Connection | None
    trouble: DeliveryError | None = None


class ConnectionPool:
    """Open SMTP connections per account, shared by a worker's threads."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str], list[Connection]] = {}
        self._lock = threading.Lock()

    def take(
        self, account: Account, email_id: int
    ) -> tuple[Connection, None] | tuple[None, DeliveryError]:
        """A live connection, or the failure that kept one from opening."""
        key = _key(account)
        while True:
            with self._lock:
                idle = self._idle.get(key)
                connection = idle.pop() if idle else None
            if connection is None:
                break
            idle_for = time.monotonic() - connection.idle_since
            if idle_for > IDLE_SECONDS:
                _close(connection)
                continue
            if idle_for < CHECK_AFTER:
                return connection, None
            try:
                connection.client.rset()
            except (smtplib.SMTPException, OSError):
                # Dropped while idle: open a fresh one instead.
                _close(connection)
                continue
            return connection, None

        log.debug("email=%s account=%s opening SMTP connection", email_id, account.id)
        try:
            host, port = outgoing_server(account)
            return Connection(client=open_smtp(account), server=f"{host}:{port}"), None
        except DeliveryError as exc:
            return None, exc

    @contextmanager
    def lease(self, account: Account, email_id: int) -> Iterator[Lease]:
        """A connection for a chunk: given back when the block ends, closed
        when it raises (a half-finished SMTP transaction is not reused)."""
        held = Lease(*self.take(account, email_id))
        try:
            yield held
        except BaseException:
            if held.connection is not None:
                self.discard(held.connection)
            raise
        if held.connection is not None:
            self.give_back(account, held.connection)

    def give_back(self, account: Account, connection: Connection) -> None:
        if account.batch_size and connection.sent >= account.batch_size:
            _close(connection)
            return
        connection.idle_since = time.monotonic()
        with self._lock:
            self._idle.setdefault(_key(account), []).append(connection)

    def renew(
        self, account: Account, connection: Connection, email_id: int
    ) -> Connection | None:
        """The same connection, or None once it has carried batch_size
        emails (closed; the next take opens another)."""
        if account.batch_size and connection.sent >= account.batch_size:
            log.debug(
                "email=%s account=%s batch of %d sent, closing the connection",
                email_id,
                account.id,
                connection.sent,
            )
            _close(connection)
            return None
        return connection

    def discard(self, connection: Connection) -> None:
        _close(connection)

    def close_all(self) -> None:
        with self._lock:
            idle = [c for conns in self._idle.values() for c in conns]
            self._idle.clear()
        for connection in idle:
            _close(connection)


POOL = ConnectionPool()


def transmit(
    connection: Connection, sender: str, recipients: Sequence[str], raw: bytes
) -> Accepted:
    """MAIL, RCPT, DATA; keeps the final reply, which sendmail() drops.

    Raises TemporaryFailure (4xx, connection lost) or PermanentFailure (5xx);
    ConnectionDropped when the connection was gone before MAIL, so the
    email can go over a new one at once, no attempt spent.
    """
    client, server = connection.client, connection.server
    for address in (sender, *recipients):
        if "\r" in address or "\n" in address or "<" in address or ">" in address:
            raise PermanentFailure(f"send: address {address!r} is not valid")
    try:
        # docmd rather than mail() and rcpt(): their address parsing cost a
        # fifth of the sender's CPU, for addresses checked at queue time.
        # Line breaks and brackets are refused above.
        code, reply = client.docmd("MAIL", f"FROM:<{sender}>")
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        raise ConnectionDropped(f"send: {server}: connection lost: {exc}") from exc
    try:
        if code != _ACCEPTED:
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        refused: dict[str, tuple[int, str]] = {}
        for recipient in recipients:
            code, reply = client.docmd("RCPT", f"TO:<{recipient}>")
            if code not in _RCPT_OK:
                refused[recipient] = (code, _text(reply))
        if len(refused) == len(recipients):
            worst = max(c for c, _ in refused.values())
            text = "; ".join(f"{a}: {c} {r}" for a, (c, r) in refused.items())
            client.rset()
            raise _failure("RCPT", server, worst, text)
        code, reply = client.data(raw)
        if code != _ACCEPTED:
            raise smtplib.SMTPDataError(code, reply)
    except smtplib.SMTPResponseException as exc:
        raise _failure(
            "MAIL/DATA", server, exc.smtp_code, _text(exc.smtp_error)
        ) from exc
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        raise TemporaryFailure(f"send: {server}: connection lost: {exc}") from exc
    except smtplib.SMTPException as exc:
        raise PermanentFailure(f"send: {server}: {exc}") from exc
    connection.sent += 1
    return Accepted(code=code, reply=_text(reply), refused=refused)


def _failure(step: str, server: str, code: int, text: str) -> DeliveryError:
    message = f"{step}: {server}: {code} {text}"
    if 400 <= code < 500:
        return TemporaryFailure(message, code=code, reply=text)
    return PermanentFailure(message, code=code, reply=text)


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        return reply.decode("utf-8", "replace")
    return reply


def _close(connection: Connection) -> None:
    try:
        connection.client.quit()
    except (smtplib.SMTPException, OSError):
        connection.client.close()


def _key(account: Account) -> tuple[str, str]:
    parts = (
        account.outgoing_host,
        account.outgoing_port,
        account.outgoing_encryption,
        account.outgoing_verify_tls,
        account.outgoing_auth,
        account.outgoing_username,
        account.outgoing_password,
        account.incoming_username,
        account.incoming_password,
        account.timeout,
    )
    return account.id, hashlib.sha256(repr(parts).encode()).hexdigest()
