"""The sender on the real broker, database, Redis and SMTP server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import select

from config.settings import reset_settings
from services.devmail import SmtpServer, free_port
from shared import delivery, outbox
from shared.bus import STAGES, install_broker, publish
from shared.crypto import encrypt
from shared.db import driver_autocommit, session_scope
from shared.mail import smtp
from shared.messages import SendEmail
from shared.models import (
    Account,
    Email,
    EmailStatusChange,
    Preferences,
    User,
    utcnow,
)
from tests.fixtures.accounts import add_smtp_account, queue_unreleased

QUEUE = STAGES["sender"].queue


def set_preferences(**fields: Any) -> None:
    with session_scope() as session:
        prefs = session.get(Preferences, 1) or Preferences(id=1)
        for name, value in fields.items():
            setattr(prefs, name, value)
        session.merge(prefs)


def queue(count: int = 1, **fields: Any) -> list[int]:
    """Queue emails from the support account and release them."""
    ids = []
    with session_scope() as session:
        account = session.get(Account, "support")
        assert account is not None
        for n in range(count):
            email = outbox.queue_email(
                session,
                account=account,
                to=[f"customer{n}@example.test"],
                subject=f"Your order {n}",
                text="It ships today.",
                **fields,
            )
            ids.append(email.id)
    outbox.release(ids)
    return ids


def email(email_id: int) -> Email:
    with session_scope() as session:
        found = session.get(Email, email_id)
        assert found is not None
        return found


def history(email_id: int) -> list[EmailStatusChange]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(EmailStatusChange)
                .where(EmailStatusChange.email_id == email_id)
                .order_by(EmailStatusChange.id)
            )
        )


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {check.__name__}")


def status_is(email_id: int, status: str) -> Callable[[], bool]:
    def check() -> bool:
        return email(email_id).status == status

    check.__name__ = f"email {email_id} {status}"
    return check


def parsed(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def start_worker(broker: dramatiq.Broker) -> dramatiq.Worker:
    """A sender worker in this process, on a broker of its own."""
    import workers.sender

    dramatiq.actor(actor_name="sender", queue_name=QUEUE, broker=broker)(
        workers.sender.sender.fn
    )
    worker = dramatiq.Worker(broker, queues={QUEUE}, worker_threads=4)
    worker.start()
    return worker


@pytest.fixture
def broker(broker: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The run's broker, with retries after a temporary failure coming in
    tenths of seconds; the pooled connections closed after."""
    monkeypatch.setattr(delivery.records, "RETRY_BASE_SECONDS", 0.1)
    yield broker
    smtp.POOL.close_all()


@pytest.fixture
def sender(broker: str) -> Iterator[list[dramatiq.Worker]]:
    """One running sender worker; a test may start more into the list."""
    workers: list[dramatiq.Worker] = []
    workers.append(start_worker(RabbitmqBroker(url=broker)))
    yield workers
    for worker in workers:
        worker.stop()
        worker.broker.close()


def test_an_email_goes_from_pending_to_processed_with_the_servers_reply(
    smtp_server: SmtpServer, sender: list[dramatiq.Worker]
) -> None:
    add_smtp_account(smtp_server)

    [email_id] = queue()
    wait_for(status_is(email_id, "processed"))

    sent = email(email_id)
    changes = history(email_id)
    assert [c.to_status for c in changes] == [
        "pending_processing",
        "in_process",
        "processed",
    ]
    assert changes[-1].smtp_code == 250
    assert "accepted" in (changes[-1].server_reply or "")
    assert sent.sent_at is not None and sent.attempts == 1
    [(mail_from, rcpt, raw)] = smtp_server.messages
    message = parsed(raw)
    assert message["Message-ID"] == sent.message_id
    assert message["Subject"] == f"Your order 0 [#{email_id}]"
    assert rcpt == ["customer0@example.test"]
    assert mail_from == "support@example.test"


def test_a_4xx_reply_returns_the_email_to_pending_and_the_next_attempt_sends_it(
    smtp_server: SmtpServer, sender: list[dramatiq.Worker]
) -> None:
    add_smtp_account(smtp_server)
    set_preferences(resend_attempts=1)
    smtp_server.fail_next(451, "Try again later")

    [email_id] = queue()
    wait_for(status_is(email_id, "processed"))

    changes = history(email_id)
    assert [c.to_status for c in changes] == [
        "pending_processing",
        "in_process",
        "pending_processing",
        "in_process",
        "processed",
    ]
    assert changes[2].smtp_code == 451
    assert changes[2].server_reply == "Try again later"
    assert "attempt 1 of 2" in changes[2].reason
    assert email(email_id).attempts == 2
    assert len(smtp_server.messages) == 1


def test_temporary_failures_beyond_the_resend_attempts_make_the_email_failed(
    smtp_server: SmtpServer, sender: list[dramatiq.Worker]
) -> None:
    add_smtp_account(smtp_server)
    set_preferences(resend_attempts=2)
    smtp_server.fail_next(452, "Mailbox busy", count=3)

    [email_id] = queue()
    wait_for(status_is(email_id, "failed"))

    changes = history(email_id)
    assert [c.to_status for c in changes].count("in_process") == 3
    assert "all 3 attempts used" in changes[-1].reason
    assert email(email_id).attempts == 3
    assert smtp_server.messages == []


def test_a_5xx_reply_fails_the_email_at_once_whatever_attempts_remain(
    smtp_server: SmtpServer, sender: list[dramatiq.Worker]
) -> None:
    add_smtp_account(smtp_server)
    set_preferences(resend_attempts=5)
    smtp_server.fail_next(550, "No such user here")

    [email_id] = queue()
    wait_for(status_is(email_id, "failed"))

    last = history(email_id)[-1]
    assert last.reason.startswith("critical failure")
    assert (last.smtp_code, last.server_reply) == (550, "No such user here")
    assert email(email_id).attempts == 1


def test_a_failed_login_fails_the_email_at_once(
    smtp_server: SmtpServer, sender: list[dramatiq.Worker]
) -> None:
    add_smtp_account(smtp_server, outgoing_password=encrypt("wrong"))
    set_preferences(resend_attempts=5)

    [email_id] = queue()
    wait_for(status_is(email_id, "failed"))

    assert history(email_id)[-1].smtp_code == 535
    assert smtp_server.messages == []


def test_processing_a_failed_email_by_hand_sends_it_past_the_attempt_limit(
    smtp_server: SmtpServer, sender: list[dramatiq.Worker]
) -> None:
    add_smtp_account(smtp_server)
    smtp_server.fail_next(451, "Greylisted")
    [email_id] = queue()
    wait_for(status_is(email_id, "failed"))

    outcome = delivery.deliver(email_id, manual=True)

    assert outcome.status == "processed"
    assert email(email_id).status == "processed"
    assert "operator" in history(email_id)[-2].reason
    assert len(smtp_server.messages) == 1


def test_the_same_send_message_delivered_five_times_sends_the_email_once(
    smtp_server: SmtpServer, sender: list[dramatiq.Worker]
) -> None:
    add_smtp_account(smtp_server)
    [email_id] = queue()
    for _ in range(4):
        publish(SendEmail(email_ids=(email_id,)))

    wait_for(status_is(email_id, "processed"))
    time.sleep(1.0)

    assert len(smtp_server.messages) == 1
    assert [c.to_status for c in history(email_id)].count("processed") == 1


def test_two_workers_racing_on_the_same_emails_send_each_once(
    smtp_server: SmtpServer, sender: list[dramatiq.Worker], broker: str
) -> None:
    add_smtp_account(smtp_server)
    sender.append(start_worker(RabbitmqBroker(url=broker)))

    ids = queue(20)
    for email_id in ids:
        publish(SendEmail(email_ids=(email_id,)))
        publish(SendEmail(email_ids=(email_id,)))
    wait_for(lambda: all(email(i).status == "processed" for i in ids))
    time.sleep(1.0)

    received = [parsed(raw)["Message-ID"] for _, _, raw in smtp_server.messages]
    assert sorted(received) == sorted(email(i).message_id for i in ids)


def test_threads_racing_to_deliver_one_email_send_it_once(
    smtp_server: SmtpServer, broker: str
) -> None:
    add_smtp_account(smtp_server)
    ids = []
    with session_scope() as session:
        account = session.get(Account, "support")
        assert account is not None
        for n in range(10):
            ids.append(
                outbox.queue_email(
                    session,
                    account=account,
                    to=[f"c{n}@example.test"],
                    subject="Race",
                    text="Only once.",
                ).id
            )
    start = threading.Barrier(4)

    def race() -> None:
        for email_id in ids:
            start.wait()
            delivery.deliver(email_id)

    threads = [threading.Thread(target=race) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(smtp_server.messages) == 10
    assert all(email(i).status == "processed" for i in ids)


def test_emails_queued_while_the_broker_is_down_go_out_once_it_is_back(
    smtp_server: SmtpServer,
    sender: list[dramatiq.Worker],
    broker: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_smtp_account(smtp_server)
    monkeypatch.setenv("SYSMAIL_BROKER_URL", "amqp://guest:guest@127.0.0.1:1/%2F")
    reset_settings()
    down = install_broker()

    ids = queue(3)

    assert all(email(i).status == "pending_processing" for i in ids)
    assert all(email(i).enqueued_at is None for i in ids)
    down.close()
    monkeypatch.setenv("SYSMAIL_BROKER_URL", broker)
    reset_settings()
    install_broker()
    assert outbox.release_due() == 3
    wait_for(lambda: all(email(i).status == "processed" for i in ids))
    assert len(smtp_server.messages) == 3


def test_a_scheduled_email_waits_in_pending_until_it_is_due(
    smtp_server: SmtpServer, sender: list[dramatiq.Worker]
) -> None:
    add_smtp_account(smtp_server)
    [email_id] = queue(scheduled_at=utcnow() + timedelta(seconds=2))

    assert outbox.release_due() == 0
    time.sleep(0.5)
    assert email(email_id).status == "pending_processing"
    assert smtp_server.messages == []

    wait_for(lambda: outbox.release_due() == 1, timeout=5)
    wait_for(status_is(email_id, "processed"))
    sent = email(email_id)
    assert sent.sent_at is not None and sent.scheduled_at is not None
    assert sent.sent_at >= sent.scheduled_at


def test_two_schedulers_releasing_at_once_release_each_email_once(
    smtp_server: SmtpServer, broker: str
) -> None:
    add_smtp_account(smtp_server)
    with session_scope() as session:
        account = session.get(Account, "support")
        assert account is not None
        for n in range(200):
            outbox.queue_email(
                session,
                account=account,
                to=[f"c{n}@example.test"],
                subject="Later",
                text="Due now.",
            )
    released: list[int] = []
    start = threading.Barrier(2)

    def scheduler() -> None:
        start.wait()
        released.append(outbox.release_due(limit=150))
        released.append(outbox.release_due(limit=150))

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sum(released) == 200


def test_suspended_processing_sends_nothing_until_it_is_resumed(
    smtp_server: SmtpServer, sender: list[dramatiq.Worker]
) -> None:
    add_smtp_account(smtp_server)
    set_preferences(suspended=True)

    [email_id] = queue()
    time.sleep(1.0)

    assert email(email_id).status == "pending_processing"
    assert email(email_id).attempts == 0
    assert outbox.release_due() == 0
    assert smtp_server.messages == []
    set_preferences(suspended=False)
    assert outbox.release_due() == 1
    wait_for(status_is(email_id, "processed"))


def test_a_claim_left_by_a_stopped_worker_is_taken_back_to_pending(
    monkeypatch: pytest.MonkeyPatch, smtp_server: SmtpServer
) -> None:
    add_smtp_account(smtp_server)
    monkeypatch.setenv("SYSMAIL_CLAIM_TIMEOUT", "60")
    reset_settings()
    with session_scope() as session:
        account = session.get(Account, "support")
        assert account is not None
        stale = outbox.queue_email(
            session, account=account, to=["a@x.test"], subject="a", text="a"
        )
        fresh = outbox.queue_email(
            session, account=account, to=["b@x.test"], subject="b", text="b"
        )
        stale.status, fresh.status = "in_process", "in_process"
        stale.claimed_at = utcnow() - timedelta(seconds=61)
        fresh.claimed_at = utcnow()
        stale_id, fresh_id = stale.id, fresh.id

    assert outbox.recover_stale_claims() == 1

    assert email(stale_id).status == "pending_processing"
    assert "sender stopped" in history(stale_id)[-1].reason
    assert email(fresh_id).status == "in_process"
    reset_settings()


def test_the_rate_limit_holds_across_two_workers(
    smtp_server: SmtpServer, sender: list[dramatiq.Worker], broker: str
) -> None:
    add_smtp_account(smtp_server, rate_limit="5/2s")
    sender.append(start_worker(RabbitmqBroker(url=broker)))

    ids = queue(15)
    wait_for(lambda: all(email(i).status == "processed" for i in ids), timeout=30)

    with session_scope() as session:
        sent = sorted(
            t
            for t in session.scalars(select(Email.sent_at).where(Email.id.in_(ids)))
            if t is not None
        )
    # Any six sends in a row span at least the 2 s window.
    spans = [(sent[i + 5] - sent[i]).total_seconds() for i in range(len(sent) - 5)]
    assert min(spans) >= 1.8
    assert (sent[-1] - sent[0]).total_seconds() >= 3.5


def test_from_is_the_account_address_with_the_users_name_when_the_server_validates(
    smtp_server: SmtpServer, sender: list[dramatiq.Worker]
) -> None:
    add_smtp_account(
        smtp_server, validates_from=True, reply_address="help@example.test"
    )
    with session_scope() as session:
        session.add(User(id="ann", email="ann@corp.test", name="Ann Smith"))

    with session_scope() as session:
        user = session.get(User, "ann")
        [email_id] = queue(user=user)
    wait_for(status_is(email_id, "processed"))

    message = parsed(smtp_server.messages[0][2])
    assert message["From"] == "Ann Smith <support@example.test>"
    assert message["Reply-To"] == "help@example.test"


def test_from_is_the_users_address_when_the_server_does_not_validate_from(
    smtp_server: SmtpServer, sender: list[dramatiq.Worker]
) -> None:
    add_smtp_account(smtp_server, validates_from=False)
    with session_scope() as session:
        session.add(User(id="ann", email="ann@corp.test", name="Ann Smith"))

    with session_scope() as session:
        user = session.get(User, "ann")
        [email_id] = queue(user=user)
    wait_for(status_is(email_id, "processed"))

    mail_from, _, raw = smtp_server.messages[0]
    assert parsed(raw)["From"] == "Ann Smith <ann@corp.test>"
    # Bounces still come back to the account.
    assert mail_from == "support@example.test"


@pytest.mark.parametrize("encryption", ["ssl", "none"])
def test_accounts_send_over_implicit_tls_and_plain_connections(
    smtp_server: SmtpServer, sender: list[dramatiq.Worker], encryption: str
) -> None:
    port = smtp_server.ssl_port if encryption == "ssl" else smtp_server.port
    add_smtp_account(smtp_server, outgoing_encryption=encryption, outgoing_port=port)

    [email_id] = queue()

    wait_for(status_is(email_id, "processed"))
    assert len(smtp_server.messages) == 1


def test_a_chunk_sends_only_its_pending_due_emails(smtp_server: SmtpServer) -> None:
    add_smtp_account(smtp_server)
    sent, canceled, pending = queue_unreleased(3)
    [later] = queue_unreleased(1, scheduled_at=utcnow() + timedelta(hours=1))
    delivery.deliver(sent)
    with session_scope() as session:
        outbox.cancel(session, canceled)

    outcomes = delivery.deliver_chunk((sent, canceled, later, pending))

    assert [o.status for o in outcomes] == [
        "processed",
        "canceled",
        "-",
        "processed",
    ]
    assert len(smtp_server.messages) == 2
    assert [email(i).status for i in (sent, canceled, later, pending)] == [
        "processed",
        "canceled",
        "pending_processing",
        "processed",
    ]
    assert [c.to_status for c in history(sent)].count("processed") == 1


def test_two_workers_given_overlapping_chunks_send_each_email_once(
    smtp_server: SmtpServer,
) -> None:
    add_smtp_account(smtp_server)
    ids = queue_unreleased(40)
    start = threading.Barrier(3)

    def send(chunk: tuple[int, ...]) -> None:
        start.wait()
        delivery.deliver_chunk(chunk)

    threads = [
        threading.Thread(target=send, args=(tuple(part),))
        for part in (ids[:30], ids[10:], ids[5:35])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    received = [parsed(raw)["Message-ID"] for _, _, raw in smtp_server.messages]
    assert sorted(received) == sorted(email(i).message_id for i in ids)
    assert all(email(i).status == "processed" for i in ids)


def test_a_failure_in_the_middle_of_a_chunk_affects_only_that_email(
    smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_smtp_account(smtp_server)
    set_preferences(resend_attempts=1)
    first, middle, last = queue_unreleased(3)
    real_transmit = delivery.send.transmit
    calls: list[int] = []

    def transmit(connection: smtp.Connection, *args: Any) -> smtp.Accepted:
        calls.append(1)
        if len(calls) == 2:
            smtp_server.fail_next(451, "Mailbox busy")
        return real_transmit(connection, *args)

    monkeypatch.setattr(delivery.send, "transmit", transmit)
    # The retry is published; no worker runs here to take it.
    monkeypatch.setattr(delivery.records, "republish", lambda claim, delay: None)

    outcomes = delivery.deliver_chunk((first, middle, last))

    assert [o.status for o in outcomes] == [
        "processed",
        "pending_processing",
        "processed",
    ]
    assert [email(i).status for i in (first, middle, last)] == [
        "processed",
        "pending_processing",
        "processed",
    ]
    assert "451" in (email(middle).last_error or "")
    received = [parsed(raw)["Message-ID"] for _, _, raw in smtp_server.messages]
    assert sorted(received) == sorted(email(i).message_id for i in (first, last))


@pytest.fixture
def window(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], None]]:
    """Set the sender window of this process."""

    def set_window(size: int) -> None:
        monkeypatch.setenv("SYSMAIL_SENDER_WINDOW", str(size))
        reset_settings()

    yield set_window
    monkeypatch.delenv("SYSMAIL_SENDER_WINDOW", raising=False)
    reset_settings()


def _unrecorded(server: SmtpServer, ids: list[int]) -> int:
    """Emails the server has that are not yet recorded as processed."""
    received = {parsed(raw)["Message-ID"] for _, _, raw in server.messages}
    return sum(
        1
        for i in ids
        if email(i).message_id in received and email(i).status != "processed"
    )


@pytest.mark.parametrize("size", [1, 3])
def test_a_thread_never_has_more_unrecorded_emails_than_its_window(
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    window: Callable[[int], None],
    size: int,
) -> None:
    window(size)
    add_smtp_account(smtp_server)
    ids = queue_unreleased(7)
    real_transmit = delivery.send.transmit
    seen: list[int] = []

    def transmit(connection: smtp.Connection, *args: Any) -> smtp.Accepted:
        seen.append(_unrecorded(smtp_server, ids))
        return real_transmit(connection, *args)

    monkeypatch.setattr(delivery.send, "transmit", transmit)

    outcomes = delivery.deliver_chunk(tuple(ids))

    assert [o.status for o in outcomes] == ["processed"] * 7
    # Before each send: what the server accepted and is not yet recorded.
    assert seen == [n % size for n in range(7)]
    # Each is stamped when the server accepted it, not when it was recorded.
    sent_at = [email(i).sent_at for i in ids]
    assert sent_at == sorted(sent_at)
    assert len(set(sent_at)) == 7
    assert all([c.to_status for c in history(i)].count("processed") == 1 for i in ids)


def test_an_unexpected_error_mid_chunk_still_records_what_was_sent(
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    window: Callable[[int], None],
) -> None:
    window(5)
    add_smtp_account(smtp_server)
    ids = queue_unreleased(4)
    real_transmit = delivery.send.transmit
    calls: list[int] = []

    def transmit(connection: smtp.Connection, *args: Any) -> smtp.Accepted:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("a bug in the sender")
        return real_transmit(connection, *args)

    monkeypatch.setattr(delivery.send, "transmit", transmit)

    with pytest.raises(RuntimeError):
        delivery.deliver_chunk(tuple(ids))

    assert len(smtp_server.messages) == 2
    assert [email(i).status for i in ids] == [
        "processed",
        "processed",
        "in_process",
        "in_process",
    ]


def test_a_pooled_connection_the_server_dropped_is_replaced_at_no_attempt(
    smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_smtp_account(smtp_server)
    first, second = queue_unreleased(2)
    monkeypatch.setattr(delivery.records, "republish", lambda claim, delay: None)
    assert delivery.deliver(first).status == "processed"

    # The server goes away and comes back: the idle pooled connection is dead.
    smtp_server.stop()
    smtp_server.start()
    outcome = delivery.deliver(second)

    assert outcome.status == "processed"
    assert email(second).attempts == 1
    assert [c.to_status for c in history(second)] == [
        "pending_processing",
        "in_process",
        "processed",
    ]
    assert len(smtp_server.messages) == 2


def test_emails_already_queued_stay_unsent_once_processing_is_suspended(
    smtp_server: SmtpServer,
) -> None:
    add_smtp_account(smtp_server)
    ids = queue_unreleased(3)
    outbox.release(ids)
    set_preferences(suspended=True)

    # The queue message arrives after the suspension.
    outcomes = delivery.deliver_chunk(ids)

    assert [o.status for o in outcomes] == ["pending_processing"] * 3
    assert all(email(i).attempts == 0 for i in ids)
    assert smtp_server.messages == []
    set_preferences(suspended=False)
    assert outbox.release_due() == 3


def test_a_refused_connection_returns_the_email_to_pending_while_attempts_remain(
    smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_smtp_account(smtp_server, outgoing_port=free_port())
    set_preferences(resend_attempts=1)
    monkeypatch.setattr(delivery.records, "republish", lambda claim, delay: None)
    [email_id] = queue_unreleased(1)

    first = delivery.deliver(email_id)

    assert first.status == "pending_processing"
    change = history(email_id)[-1]
    assert "temporary failure, attempt 1 of 2" in change.reason
    assert "connect" in (email(email_id).last_error or "")
    with session_scope() as session:
        account = session.get(Account, "support")
        assert account is not None
        account.outgoing_port = smtp_server.port
    assert delivery.deliver(email_id).status == "processed"
    assert email(email_id).attempts == 2


@pytest.mark.parametrize("verify", [True, False])
def test_a_server_certificate_nobody_trusts_is_refused_unless_checks_are_off(
    smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch, verify: bool
) -> None:
    monkeypatch.delenv("SYSMAIL_CA_FILE")
    reset_settings()
    add_smtp_account(smtp_server, outgoing_verify_tls=verify)
    [email_id] = queue_unreleased(1)

    outcome = delivery.deliver(email_id)

    if verify:
        assert outcome.status == "failed"
        assert "certificate" in (email(email_id).last_error or "")
        assert smtp_server.messages == []
    else:
        assert outcome.status == "processed"
        assert len(smtp_server.messages) == 1
    reset_settings()


def test_an_email_sent_after_its_claim_was_taken_back_is_recorded_from_pending(
    smtp_server: SmtpServer,
) -> None:
    add_smtp_account(smtp_server)
    [email_id] = queue_unreleased(1)
    with session_scope() as session:
        account = session.get(Account, "support")
        assert account is not None
    claim = delivery.claims.Claim(
        email_id=email_id,
        attempts=1,
        account=account,
        envelope_from=account.address,
        recipients=["reader0@example.test"],
        raw=b"",
    )

    with driver_autocommit() as db:
        delivery.records.RECORDS.record(db, [(claim, smtp.Accepted(250, "Queued"))])

    last = history(email_id)[-1]
    assert (last.from_status, last.to_status) == ("pending_processing", "processed")
    assert email(email_id).status == "processed"


def _reads_of_emails(plan: dict[str, Any]) -> set[str]:
    """The emails indexes a JSON plan reads, and "Seq Scan" if it reads the
    whole table."""
    found = set()
    index = plan.get("Index Name", "")
    if index.endswith("_emails") or index.startswith(("ix_emails", "uq_emails")):
        found.add(index)
    if plan["Node Type"] == "Seq Scan" and plan.get("Relation Name") == "emails":
        found.add("Seq Scan")
    for child in plan.get("Plans", []):
        found |= _reads_of_emails(child)
    return found


def test_a_claim_reads_its_chunk_by_primary_key_even_before_statistics_exist(
    smtp_server: SmtpServer,
) -> None:
    # Right after a large campaign is stored nothing has analyzed the table
    # yet; a generic plan then once read every email of the account.
    add_smtp_account(smtp_server)
    ids = queue_unreleased(300)
    statement = delivery.claims._CLAIM.replace("%(ids)s", "$1::bigint[]").replace(
        "%(account)s", "$2::text"
    )
    with driver_autocommit() as db:
        db.execute(
            "DELETE FROM pg_statistic WHERE starelid = 'emails'::regclass;"
            "UPDATE pg_class SET reltuples = -1, relpages = 0 "
            "WHERE oid = 'emails'::regclass"
        )
        db.execute("SET plan_cache_mode = force_generic_plan")
        db.execute(f"PREPARE generic_claim AS {statement}")
        try:
            chunk = ",".join(str(i) for i in ids[100:125])
            [[plan]] = db.execute(
                f"EXPLAIN (FORMAT JSON) EXECUTE generic_claim('{{{chunk}}}', 'support')"
            ).fetchall()
        finally:
            db.execute("DEALLOCATE generic_claim")
            db.execute("RESET plan_cache_mode")

    assert _reads_of_emails(plan[0]["Plan"]) == {"pk_emails"}
