"""Run sysmail as real processes against this test run's services."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from services.devmail import free_port

ROOT = Path(__file__).resolve().parents[2]
SYSMAIL = [sys.executable, "-m", "cli.main"]


@pytest.fixture
def system_env(
    environment: dict[str, str], broker_url: str, tls_ca: Any
) -> dict[str, str]:
    """Environment of the sysmail processes: this run's services, fast ticks."""
    return {
        **os.environ,
        **environment,
        "SYSMAIL_BROKER_URL": broker_url,
        "SYSMAIL_CA_FILE": str(tls_ca.ca_file),
        "SYSMAIL_SCHEDULER_TICK": "0.3",
        "SYSMAIL_ADMIN_PORT": str(free_port()),
        "SYSMAIL_WORKER_THREADS": "4",
    }


@pytest.fixture
def sysmail(
    system_env: dict[str, str],
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run one sysmail command to its end; returns the finished process."""

    def run(
        *args: str, env: dict[str, str] | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SYSMAIL, *args],
            cwd=ROOT,
            env={**system_env, **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


@pytest.fixture
def start_sysmail(
    system_env: dict[str, str],
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start a sysmail command in the background, its output added to log;
    whatever still runs at the end is stopped with SIGTERM, killed if it
    has not stopped within a minute."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        *args: str, log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        # The process writes through its own copy of the file.
        with log.open("ab") as output:
            process = subprocess.Popen(
                [*SYSMAIL, *args],
                cwd=ROOT,
                env=env or system_env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        return process

    yield start
    running = [process for process in started if process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    for process in running:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def running_system(
    start_sysmail: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> subprocess.Popen[bytes]:
    """`sysmail run` in the background; stopped with SIGTERM at the end."""
    return start_sysmail("run", log=tmp_path / "run.log")


@pytest.fixture
def publisher(broker: str) -> None:
    """This process publishes to the run's RabbitMQ, as the CLI would."""


def queue_state(broker_url: str, queue: str) -> tuple[int, int]:
    """Messages waiting in the queue and its consumers, asked directly."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        declared = connection.channel().queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return 0, 0
    finally:
        connection.close()
    return declared.method.message_count, declared.method.consumer_count


def wait_until(
    check: Callable[[], Any], timeout: float = 30.0, step: float = 0.2
) -> Any:
    """Poll check until it returns something truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(step)
    raise AssertionError(
        f"timed out after {timeout:.0f} s waiting for {check.__name__}"
    )
