"""RabbitMQ really down: mail is still taken, then sent once when it is back.

Every sysmail process reaches RabbitMQ through a proxy that the test stops
(connections refused, live ones cut) and starts again on the same port.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pika
import pytest
from sqlalchemy import select

from services.devmail import SmtpServer
from shared.db import session_scope
from shared.models import Contact, Email, EmailStatusChange, Template
from tests.e2e.conftest import queue_state, wait_until
from tests.fixtures.accounts import add_smtp_account
from tests.fixtures.proxy import TcpProxy

Sysmail = Callable[..., subprocess.CompletedProcess[str]]
# Several scheduler passes (0.3 s each in these tests) and more.
REPEAT_WINDOW = 2.0


@pytest.fixture
def rabbitmq(broker_url: str) -> Iterator[TcpProxy]:
    """The way to this run's RabbitMQ, up at first."""
    purge(broker_url, "send", "send.DQ", "archive")
    proxy = TcpProxy("127.0.0.1", 5672)
    proxy.up()
    yield proxy
    proxy.down()


@pytest.fixture
def proxied_env(
    system_env: dict[str, str], broker_url: str, rabbitmq: TcpProxy
) -> dict[str, str]:
    vhost = broker_url.rpartition("/")[2]
    url = f"amqp://guest:guest@127.0.0.1:{rabbitmq.port}/{vhost}"
    return {**system_env, "SYSMAIL_BROKER_URL": url}


@pytest.fixture
def system(
    proxied_env: dict[str, str],
    start_sysmail: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> dict[str, Path]:
    """A scheduler and a sender worker through the proxy; their log files."""
    logs = {name: tmp_path / f"{name}.log" for name in ("scheduler", "sender")}
    start_sysmail("scheduler", log=logs["scheduler"], env=proxied_env)
    start_sysmail("worker", "sender", log=logs["sender"], env=proxied_env)
    return logs


def purge(broker_url: str, *queues: str) -> None:
    """Empty the queues that exist; the workers declare the rest."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    for queue in queues:
        with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
            connection.channel().queue_purge(queue)
    connection.close()


def cut_while_running(rabbitmq: TcpProxy, broker_url: str) -> None:
    """Once both processes are connected through the proxy, take it down."""

    def connected() -> bool:
        # The scheduler's first pass publishes the day's archive run.
        archive_published = queue_state(broker_url, "archive")[0] == 1
        return archive_published and queue_state(broker_url, "send")[1] == 1

    wait_until(connected, timeout=30)
    rabbitmq.down()
    wait_until(lambda: queue_state(broker_url, "send")[1] == 0, timeout=10)


def statuses(ids: list[int]) -> set[str]:
    with session_scope() as session:
        return set(session.scalars(select(Email.status).where(Email.id.in_(ids))))


def history(email_id: int) -> list[str]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(EmailStatusChange.to_status)
                .where(EmailStatusChange.email_id == email_id)
                .order_by(EmailStatusChange.id)
            )
        )


def message_ids(ids: list[int]) -> set[str | None]:
    with session_scope() as session:
        return set(session.scalars(select(Email.message_id).where(Email.id.in_(ids))))


def received(server: SmtpServer) -> Counter[str]:
    return Counter(
        str(message_from_bytes(raw, policy=policy.default)["Message-ID"])
        for _, _, raw in server.messages
    )


def wait_out_the_outage(logs: dict[str, Path], ids: list[int]) -> None:
    """Until the scheduler has tried to publish the emails and could not."""
    wait_until(
        lambda: "broker unreachable" in logs["scheduler"].read_text(), timeout=15
    )
    assert statuses(ids) == {"pending_processing"}


@pytest.mark.slow
def test_an_email_sent_while_rabbitmq_is_down_goes_out_once_when_it_is_back(
    smtp_server: SmtpServer,
    sysmail: Sysmail,
    proxied_env: dict[str, str],
    rabbitmq: TcpProxy,
    broker_url: str,
    system: dict[str, Path],
) -> None:
    add_smtp_account(smtp_server, "news")
    cut_while_running(rabbitmq, broker_url)

    sent = sysmail(
        "send", "--account", "news", "--to", "ann@example.test",
        "--subject", "Your order", "--body", "It ships today.",
        env=proxied_env,
    )  # fmt: skip

    assert sent.returncode == 0, sent.stderr
    email_id = int(sent.stdout)
    assert "stay pending until it is back" in sent.stderr
    wait_out_the_outage(system, [email_id])
    assert smtp_server.messages == []

    rabbitmq.up()
    wait_until(lambda: statuses([email_id]) == {"processed"}, timeout=30)

    # Time for a second copy to follow, were one on its way.
    time.sleep(REPEAT_WINDOW)
    assert received(smtp_server) == {m: 1 for m in message_ids([email_id])}
    assert history(email_id) == ["pending_processing", "in_process", "processed"]


@pytest.mark.slow
def test_a_campaign_sent_while_rabbitmq_is_down_goes_out_once_when_it_is_back(
    smtp_server: SmtpServer,
    sysmail: Sysmail,
    proxied_env: dict[str, str],
    rabbitmq: TcpProxy,
    broker_url: str,
    system: dict[str, Path],
) -> None:
    add_smtp_account(smtp_server, "news")
    with session_scope() as session:
        session.add(
            Template(
                id="spring", subject="Spring news", text="Hello {{ contact.name }}."
            )
        )
        session.add_all(
            Contact(id=name, name=name.title(), email=f"{name}@example.test")
            for name in ("ann", "bob", "cy")
        )
    created = sysmail(
        "campaigns", "create", "spring", "--account", "news",
        "--template", "spring", "--contacts",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    cut_while_running(rabbitmq, broker_url)

    sent = sysmail("campaigns", "send", "spring", env=proxied_env)

    assert sent.returncode == 0, sent.stderr
    assert "3 emails queued" in sent.stdout
    with session_scope() as session:
        ids = list(
            session.scalars(select(Email.id).where(Email.campaign_id == "spring"))
        )
    wait_out_the_outage(system, ids)
    assert smtp_server.messages == []

    rabbitmq.up()
    wait_until(lambda: statuses(ids) == {"processed"}, timeout=30)

    time.sleep(REPEAT_WINDOW)
    assert received(smtp_server) == {m: 1 for m in message_ids(ids)}
    assert sorted(rcpt for _, [rcpt], _ in smtp_server.messages) == [
        "ann@example.test", "bob@example.test", "cy@example.test",
    ]  # fmt: skip
    assert all(
        history(i) == ["pending_processing", "in_process", "processed"] for i in ids
    )
