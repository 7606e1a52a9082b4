"""Runs the actors of chosen stages in this process, on the RabbitMQ broker."""

from __future__ import annotations

import importlib
import logging
import threading

import dramatiq

from shared.bus import STAGES, install_broker

log = logging.getLogger(__name__)


def load_stages(names: list[str]) -> set[str]:
    """Import the stages' actors; returns the queues they consume."""
    for name in names:
        importlib.import_module(f"workers.{name}")
    return {STAGES[name].queue for name in names}


def run_workers(names: list[str], threads: int, stop: threading.Event) -> None:
    """Consume the stages' queues until stop is set, then finish what runs."""
    broker = install_broker()
    queues = load_stages(names)
    worker = dramatiq.Worker(broker, queues=queues, worker_threads=threads)
    worker.start()
    log.info("worker for %s started with %d threads", ",".join(names), threads)
    stop.wait()
    log.info("worker for %s stopping", ",".join(names))
    worker.stop()
    broker.close()
