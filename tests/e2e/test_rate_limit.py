"""An account's rate limit holds when two sender processes share its mail."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select

from services.devmail import HOST, free_port
from shared import outbox
from shared.db import session_scope
from shared.models import Account, Email
from tests.e2e.conftest import queue_state, wait_until
from tests.fixtures.accounts import queue_unreleased

RATE = "6/2s"
PER_WINDOW = 6
WINDOW = 2.0
EMAILS = 18
# An arrival trails its booked slot by the SMTP exchange, a few milliseconds.
LATENCY = 0.1
PROCESSED = re.compile(
    r"^(?P<at>\S+ \S+) .* email=(?P<id>\d+) account=news .*-> processed", re.M
)


class Arrivals:
    """An SMTP handler that notes when each message arrived."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        raw = bytes(envelope.original_content or b"")
        message_id = message_from_bytes(raw, policy=policy.default)["Message-ID"]
        with self._lock:
            self.seen.append((time.monotonic(), str(message_id)))
        return "250 OK"

    def times(self) -> list[float]:
        with self._lock:
            return sorted(at for at, _ in self.seen)

    def message_ids(self) -> list[str]:
        with self._lock:
            return [message_id for _, message_id in self.seen]


@pytest.fixture
def smtp_arrivals() -> Iterator[tuple[int, Arrivals]]:
    arrivals = Arrivals()
    port = free_port()
    controller = Controller(arrivals, hostname=HOST, port=port)
    controller.start()
    yield port, arrivals
    controller.stop()


@pytest.fixture
def senders(
    start_sysmail: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> list[Path]:
    """Two `sysmail worker sender` processes; the log file of each."""
    logs = [tmp_path / f"sender{n}.log" for n in (1, 2)]
    for log in logs:
        start_sysmail("worker", "sender", log=log)
    return logs


def sent_by(log: Path) -> dict[int, datetime]:
    """The emails a process says it sent, with when it said so."""
    return {
        int(m["id"]): datetime.strptime(m["at"], "%Y-%m-%d %H:%M:%S,%f")
        for m in PROCESSED.finditer(log.read_text())
    }


@pytest.mark.slow
def test_two_sender_processes_together_keep_the_accounts_rate(
    smtp_arrivals: tuple[int, Arrivals],
    publisher: None,
    senders: list[Path],
    broker_url: str,
) -> None:
    port, arrivals = smtp_arrivals
    with session_scope() as session:
        account = Account(
            id="news",
            address="news@example.test",
            outgoing_host=HOST,
            outgoing_port=port,
            outgoing_encryption="none",
            rate_limit=RATE,
        )
        session.add(account)
    ids = queue_unreleased(EMAILS, "news", subject="Spring news", text="Hello.")
    # Both consuming before the first message, so RabbitMQ deals to both.
    wait_until(lambda: queue_state(broker_url, "send")[1] == 2, timeout=30)

    # One SendEmail per email, as single emails are released.
    for email_id in ids:
        outbox.release([email_id])
    wait_until(lambda: len(arrivals.times()) >= EMAILS, timeout=60)
    # Time for a repeat to arrive, were one on its way.
    time.sleep(0.5)

    with session_scope() as session:
        stored = set(session.scalars(select(Email.message_id)))
    assert Counter(arrivals.message_ids()) == {m: 1 for m in stored}
    times = arrivals.times()
    # No 2 s window holds more than six: any seven arrivals span the window.
    spans = [times[i + PER_WINDOW] - times[i] for i in range(EMAILS - PER_WINDOW)]
    assert min(spans) >= WINDOW - LATENCY
    # Eighteen at six per 2 s: the third six cannot start before 4 s.
    assert times[-1] - times[0] >= 2 * WINDOW - LATENCY

    first, second = (sent_by(log) for log in senders)
    assert first and second
    assert sorted([*first, *second]) == sorted(ids)
    # Sending at the same time, not one after the other.
    assert min(first.values()) < max(second.values())
    assert min(second.values()) < max(first.values())
    print(
        f"sent {len(first)} + {len(second)} in {times[-1] - times[0]:.2f} s, "
        f"tightest seven in {min(spans):.2f} s"
    )
