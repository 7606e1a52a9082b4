"""Runs the whole system as child processes and stops them together."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

from shared.bus import STAGES

log = logging.getLogger(__name__)


def commands() -> list[list[str]]:
    """The processes of a complete system: scheduler, one per stage, admin."""
    me = [sys.executable, "-m", "cli.main"]
    return [
        [*me, "scheduler"],
        *([*me, "worker", stage] for stage in STAGES),
        [*me, "admin"],
    ]


def supervise(stop: threading.Event, extra_env: dict[str, str] | None = None) -> int:
    """Start every process; when one exits or stop is set, end them all.

    Returns 0 after a requested stop, 1 when a process ended by itself.
    """
    env = {**os.environ, **(extra_env or {})}
    started = [(cmd, subprocess.Popen(cmd, env=env)) for cmd in commands()]
    children = [child for _, child in started]
    log.info("started %d processes", len(children))

    failed = None
    while not stop.is_set() and failed is None:
        failed = next((s for s in started if s[1].poll() is not None), None)
        stop.wait(0.5)
    if failed is not None:
        command, child = failed
        log.error(
            "%s exited with code %s; stopping the others",
            " ".join(command[3:]),
            child.returncode,
        )

    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    log.info("all processes stopped")
    return 0 if failed is None else 1
