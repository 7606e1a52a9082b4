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

import pytest

from services.devmail import free_port

ROOT = Path(__file__).resolve().parents[2]


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
            [sys.executable, "-m", "cli.main", *args],
            cwd=ROOT,
            env={**system_env, **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


@pytest.fixture
def running_system(
    system_env: dict[str, str], tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`sysmail run` in the background; stopped with SIGTERM at the end."""
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "run"],
        cwd=ROOT,
        env=system_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
    log.close()


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
