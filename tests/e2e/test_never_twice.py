"""Never twice, never lost: sender workers as processes, one killed mid-run."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import func, select

from config.settings import reset_settings
from services.devmail import SmtpServer
from shared import outbox
from shared.bus import STAGES, install_broker
from shared.crypto import encrypt
from shared.db import session_scope
from shared.models import Account, Email
from tests.e2e.conftest import ROOT, wait_until

EMAILS = 600
THREADS = 4


@pytest.fixture
def workers(
    system_env: dict[str, str], tmp_path: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Sender workers started by the test; all stopped at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def start_sender(
    env: dict[str, str], log: Path, started: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "worker",
            "sender",
            "--threads",
            str(THREADS),
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    started.append(process)
    return process


def count(status: str) -> int:
    with session_scope() as session:
        return (
            session.scalar(
                select(func.count()).select_from(Email).where(Email.status == status)
            )
            or 0
        )


@pytest.mark.slow
def test_a_sender_killed_mid_campaign_loses_no_email_and_repeats_none_outside_window(
    smtp_server: SmtpServer,
    system_env: dict[str, str],
    workers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYSMAIL_BROKER_URL", system_env["SYSMAIL_BROKER_URL"])
    # This test plays the scheduler, with a short claim timeout.
    monkeypatch.setenv("SYSMAIL_CLAIM_TIMEOUT", "3")
    reset_settings()
    broker = install_broker()
    broker.declare_queue(STAGES["sender"].queue)
    broker.flush_all()
    with session_scope() as session:
        account = Account(
            id="news",
            address="news@example.test",
            outgoing_host=smtp_server.host,
            outgoing_port=smtp_server.port,
            outgoing_encryption="starttls",
            outgoing_auth="custom",
            outgoing_username="sysmail@example.test",
            outgoing_password=encrypt("smtp-secret"),
        )
        session.add(account)
        session.flush()
        ids = [
            outbox.queue_email(
                session,
                account=account,
                to=[f"reader{n}@example.test"],
                subject="Spring news",
                text="Hello.",
                kind="campaign",
            ).id
            for n in range(EMAILS)
        ]
    outbox.release(ids)
    log = tmp_path / "workers.log"

    doomed = start_sender(system_env, log, workers)
    start_sender(system_env, log, workers)
    wait_until(lambda: len(smtp_server.messages) >= 100, timeout=60, step=0.01)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    # Killed in the middle: much of the campaign was still to go.
    assert len(smtp_server.messages) < EMAILS - 100
    in_flight = count("in_process")
    start_sender(system_env, log, workers)

    def all_processed() -> bool:
        outbox.recover_stale_claims()
        outbox.release_due()
        return count("processed") == EMAILS

    wait_until(all_processed, timeout=120, step=0.5)

    with session_scope() as session:
        stored = set(session.scalars(select(Email.message_id)))
    received = Counter(
        message_from_bytes(raw, policy=policy.default)["Message-ID"]
        for _, _, raw in smtp_server.messages
    )
    assert set(received) == stored
    repeated = [mid for mid, times in received.items() if times > 1]
    # The documented window: only emails in flight in the killed worker's
    # threads may go out twice, at most one per thread.
    assert all(received[mid] == 2 for mid in repeated)
    assert len(repeated) <= min(in_flight, THREADS)
    assert len(smtp_server.messages) < EMAILS + THREADS + 1
    assert count("failed") == 0
    print(f"in flight at the kill: {in_flight}, sent twice: {len(repeated)}")
