"""A broker that is down is said once, not on every reconnection attempt."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from config.logging import OutageOnce, configure_logging


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(OutageOnce())
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def test_a_consumer_reports_the_broker_down_once_however_often_it_retries(
    output: io.StringIO,
) -> None:
    send = logging.getLogger("dramatiq.worker.ConsumerThread(send)")
    fetch = logging.getLogger("dramatiq.worker.ConsumerThread(fetch)")

    for _ in range(5):
        send.critical("Consumer encountered a connection error: refused")
        send.critical("Restarting consumer in 3.00 seconds.")
    fetch.critical("Consumer encountered a connection error: refused")
    send.critical("Consumer stopped for another reason")

    lines = output.getvalue().splitlines()
    assert lines == [
        "Consumer encountered a connection error: refused",
        "Restarting consumer in 3.00 seconds.",
        "Consumer encountered a connection error: refused",
        "Consumer stopped for another reason",
    ]


def test_pika_says_nothing_of_a_failed_connection_once_logging_is_configured(
    output: io.StringIO,
) -> None:
    pika_log = logging.getLogger("pika.adapters.blocking_connection")
    saved = logging.getLogger("pika").level
    configure_logging("INFO", "test")
    try:
        pika_log.error("Connection workflow failed")
        logging.getLogger("shared.outbox").warning("broker unreachable")
    finally:
        logging.getLogger("pika").setLevel(saved)

    assert output.getvalue().splitlines() == ["broker unreachable"]
