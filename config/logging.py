"""One log format for every process; chatty libraries kept at warning."""

from __future__ import annotations

import logging

QUIET = ("pika", "dramatiq.broker", "uvicorn.access", "mail.log")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
    )
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
