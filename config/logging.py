"""One log format for every process; chatty libraries kept quiet."""

from __future__ import annotations

import logging
import time

QUIET = ("dramatiq.broker", "uvicorn.access", "mail.log")
# pika logs a connection that fails as half a dozen errors with tracebacks;
# dramatiq and sysmail report the same failure in a line of their own.
SILENT = ("pika",)
# While the broker is down, each dramatiq consumer says so every 3 seconds.
REPEATS = ("Consumer encountered a connection error", "Restarting consumer")
REPEAT_EVERY = 600.0


class OutageOnce(logging.Filter):
    """Lets a consumer's "broker unreachable" through once per REPEAT_EVERY
    seconds instead of on every reconnection attempt."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("dramatiq.worker.ConsumerThread"):
            return True
        message = record.getMessage()
        kind = next((r for r in REPEATS if message.startswith(r)), None)
        if kind is None:
            return True
        now = time.monotonic()
        last = self._last.get((record.name, kind))
        if last is not None and now - last < REPEAT_EVERY:
            return False
        self._last[(record.name, kind)] = now
        return True


def configure_logging(level: str = "INFO", process: str = "sysmail") -> None:
    """Log lines name the process (``worker:sender``), since `sysmail run`
    interleaves the output of all of them."""
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s %(levelname)s {process} %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, OutageOnce) for f in handler.filters):
            handler.addFilter(OutageOnce())
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in SILENT:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
