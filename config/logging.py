"""One log format for every process; chatty libraries kept at warning."""

from __future__ import annotations

import logging

QUIET = ("pika", "dramatiq.broker", "uvicorn.access", "mail.log")


def configure_logging(level: str = "INFO", process: str = "sysmail") -> None:
    """Log lines name the process (``worker:sender``), since `sysmail run`
    interleaves the output of all of them."""
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s %(levelname)s {process} %(name)s: %(message)s",
    )
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
