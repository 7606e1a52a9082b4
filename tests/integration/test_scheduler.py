"""The scheduler polls each mailbox on its interval, once, however many run,
and starts the archive once a day."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import timedelta

import dramatiq.errors
import pika
import pytest

from config.settings import reset_settings
from services import scheduler
from shared.bus import install_broker
from shared.db import session_scope
from shared.models import Account, Email, Preferences, utcnow


def drain(broker_url: str, queue: str) -> list[dict[str, object]]:
    """Take every message off a queue and return the stage payloads."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    channel = connection.channel()
    payloads = []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        payloads.append(json.loads(body)["args"][0])
    connection.close()
    return payloads


def add_account(account_id: str, protocol: str, poll_interval: int = 60) -> None:
    with session_scope() as session:
        session.add(
            Account(
                id=account_id,
                address=f"{account_id}@example.test",
                incoming_protocol=protocol,
                incoming_host="127.0.0.1",
                root_folder="INBOX" if protocol == "imap" else None,
                poll_interval=poll_interval,
            )
        )


def test_each_receiving_account_is_polled_once_per_interval(broker: str) -> None:
    add_account("support", "imap")
    add_account("sales", "pop3")
    add_account("newsletter", "none")
    now = utcnow()

    first = scheduler.tick(now)
    again = scheduler.tick(now + timedelta(seconds=30))
    later = scheduler.tick(now + timedelta(seconds=61))

    assert sorted(first.polled) == ["sales", "support"]
    assert again.polled == []
    assert sorted(later.polled) == ["sales", "support"]
    fetched = Counter(p["account_id"] for p in drain(broker, "fetch"))
    assert fetched == {"support": 2, "sales": 2}


def test_two_schedulers_at_once_poll_each_mailbox_once(broker: str) -> None:
    for n in range(20):
        add_account(f"box{n}", "imap")
    now = utcnow()
    barrier = threading.Barrier(2)
    results: list[scheduler.Tick] = []

    def run() -> None:
        barrier.wait()
        results.append(scheduler.tick(now))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    polled = [a for r in results for a in r.polled]
    assert sorted(polled) == sorted(f"box{n}" for n in range(20))
    assert len(drain(broker, "fetch")) == 20
    assert sum(r.archive_started for r in results) == 1


def test_suspended_processing_polls_nothing(broker: str) -> None:
    add_account("support", "imap")
    with session_scope() as session:
        session.add(Preferences(id=1, suspended=True))

    done = scheduler.tick(utcnow())

    assert done.polled == []
    assert drain(broker, "fetch") == []


def test_inactive_accounts_are_not_polled(broker: str) -> None:
    add_account("support", "imap")
    with session_scope() as session:
        account = session.get(Account, "support")
        assert account is not None
        account.active = False

    assert scheduler.tick(utcnow()).polled == []


def test_the_archive_starts_once_a_day_and_its_message_reaches_the_archiver(
    broker: str,
) -> None:
    from workers.archiver import archiver

    with session_scope() as session:
        session.add(Preferences(id=1, archive_after_months=3))
        old = Email(
            direction="out",
            status="processed",
            subject="Sent last year",
            sent_at=utcnow() - timedelta(days=400),
        )
        session.add(old)
        session.flush()
        old_id = old.id
    now = utcnow()

    first = scheduler.tick(now)
    soon_after = scheduler.tick(now + timedelta(seconds=5))
    same_day = scheduler.tick(now + timedelta(hours=23, minutes=59))
    messages_of_the_first_day = drain(broker, "archive")
    next_day = scheduler.tick(now + timedelta(days=1))

    assert first.archive_started
    assert not soon_after.archive_started and not same_day.archive_started
    assert messages_of_the_first_day == [{"email_ids": []}]
    assert next_day.archive_started
    [message] = drain(broker, "archive")
    archiver(message)
    with session_scope() as session:
        archived = session.get(Email, old_id)
        assert archived is not None and archived.archived


def test_polls_and_the_archive_missed_while_the_broker_is_down_come_next_pass(
    broker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_account("support", "imap")
    monkeypatch.setenv("SYSMAIL_BROKER_URL", "amqp://guest:guest@127.0.0.1:1/%2F")
    reset_settings()
    down = install_broker()
    now = utcnow()

    with pytest.raises(dramatiq.errors.BrokerConnectionError):
        scheduler.tick(now)

    down.close()
    monkeypatch.setenv("SYSMAIL_BROKER_URL", broker)
    reset_settings()
    install_broker()
    back = scheduler.tick(now + timedelta(seconds=5))
    assert back.polled == ["support"]
    assert back.archive_started
    assert [p["account_id"] for p in drain(broker, "fetch")] == ["support"]
    assert len(drain(broker, "archive")) == 1
