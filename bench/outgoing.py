"""Outgoing benchmark: a campaign through sysmail against a plain smtplib loop.

Both runs deliver the same number of messages to the same local SMTP server
(aiosmtpd in a process of its own that accepts and counts). sysmail's run is
timed end to end: from queuing the campaign to the last email ``processed``,
with ``sysmail worker sender`` processes on the real RabbitMQ, PostgreSQL and
Redis. The plain loop sends over one connection. sysmail runs twice: with
the sender window the environment sets (1, the default: each email's status
committed before its thread sends the next), and with a wider window
(``--wide-window``), which trades more emails repeated after a crash for
fewer commits. The bench uses a database and a RabbitMQ virtual host of its
own, made and dropped here.

    .venv/bin/python bench/outgoing.py --recipients 5000
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.synchronize
import os
import secrets
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import pika
from sqlalchemy import create_engine, insert, text

ROOT = Path(__file__).resolve().parents[1]
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
AMQP = "amqp://guest:guest@127.0.0.1:5672"
HOST = "127.0.0.1"
SUBJECT = "News for {{ contact.name }}"
TEXT = "Hello {{ contact.name }},\n\nthe spring news from {{ contact.city }}.\n" * 4
HTML = "<p>Hello {{ contact.name }},</p><p>the spring news from {{ contact.city }}.</p>"


# -- the SMTP server, in a process of its own -------------------------------


def _serve(
    port: int, count: Synchronized[int], stop: multiprocessing.synchronize.Event
) -> None:
    from aiosmtpd.controller import Controller

    class Counting:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with count.get_lock():
                count.value += 1
            return "250 OK"

    controller = Controller(Counting(), hostname=HOST, port=port)
    controller.start()
    stop.wait()
    controller.stop()


@dataclass
class SmtpServer:
    port: int
    count: Synchronized[int]

    def wait_for(self, n: int, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count.value < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"server got {self.count.value} of {n} messages")
            time.sleep(0.01)


@contextmanager
def smtp_server() -> Iterator[SmtpServer]:
    context = multiprocessing.get_context("fork")
    port = free_port()
    count: Synchronized[int] = context.Value("i", 0)
    stop = context.Event()
    process = context.Process(target=_serve, args=(port, count, stop), daemon=True)
    process.start()
    _wait_for_port(port)
    try:
        yield SmtpServer(port, count)
    finally:
        stop.set()
        process.join(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- a database and a virtual host of the bench's own --------------------------


@contextmanager
def services(run: str) -> Iterator[dict[str, str]]:
    """Environment naming a fresh database and RabbitMQ vhost, dropped after."""
    database = f"sysmail_bench_{run}"
    vhost = f"sysmail-bench-{run}"
    _admin_sql(f'DROP DATABASE IF EXISTS "{database}"')
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest"] + [".*"] * 3,
        check=True,
    )
    env = {
        "SYSMAIL_DATABASE_URL": f"{PG}/{database}",
        "SYSMAIL_BROKER_URL": f"{AMQP}/{vhost}",
        "SYSMAIL_REDIS_URL": os.environ.get(
            "SYSMAIL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"
        ),
        "SYSMAIL_SECRET_KEY": secrets.token_urlsafe(32),
        "SYSMAIL_LOG_LEVEL": os.environ.get("SYSMAIL_BENCH_LOG_LEVEL", "WARNING"),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        from shared.db import reset_engines

        reset_engines()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False)
        _admin_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _admin_sql(statement: str) -> None:
    engine = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(statement))
    engine.dispose()


def prepare(recipients: int, smtp_port: int, account_id: str) -> None:
    """Schema, a send-only account on the bench server, template, contacts."""
    from config.settings import reset_settings
    from shared import migrate
    from shared.db import get_engine, session_scope
    from shared.models import Account, Contact, Template

    reset_settings()
    migrate.upgrade()
    with session_scope() as session:
        session.add(Template(id="bench", subject=SUBJECT, text=TEXT, html=HTML))
        session.add(
            Account(
                id=account_id,
                address=f"{account_id}@bench.test",
                display_name="Bench",
                outgoing_host=HOST,
                outgoing_port=smtp_port,
                outgoing_encryption="none",
                outgoing_auth="none",
            )
        )
    with get_engine().begin() as conn:
        conn.execute(
            insert(Contact),
            [
                {
                    "id": f"c{n:06}",
                    "name": f"Contact {n}",
                    "email": f"c{n:06}@bench.test",
                    "opted_out": False,
                    "bounced": False,
                    "fields": {"city": "Oslo"},
                }
                for n in range(recipients)
            ],
        )


# -- sysmail's run -------------------------------------------------------------


@contextmanager
def sender_workers(
    env: dict[str, str], processes: int, threads: int, window: int | None
) -> Iterator[list[subprocess.Popen[bytes]]]:
    command = [sys.executable, "-m", "cli.main", "worker", "sender"]
    own = dict(env)
    if window is not None:
        own["SYSMAIL_SENDER_WINDOW"] = str(window)
    workers = [
        subprocess.Popen(
            [*command, "--threads", str(threads)],
            cwd=ROOT,
            env={**os.environ, **own},
        )
        for _ in range(processes)
    ]
    try:
        _wait_for_consumers(env["SYSMAIL_BROKER_URL"], processes)
        yield workers
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()


def _wait_for_consumers(broker_url: str, expected: int, timeout: float = 60) -> None:
    """Until every worker consumes the send queue, so none starts late."""
    from shared.bus import STAGES

    deadline = time.monotonic() + timeout
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = connection.channel()
        while True:
            try:
                declared = channel.queue_declare(STAGES["sender"].queue, passive=True)
                if declared.method.consumer_count >= expected:
                    return
            except pika.exceptions.ChannelClosedByBroker:
                channel = connection.channel()
            if time.monotonic() > deadline:
                raise TimeoutError("sender workers did not start consuming")
            time.sleep(0.2)
    finally:
        connection.close()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_memory_kib(pid: int) -> int:
    """Peak resident memory of a process (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class SysmailRun:
    seconds: float
    queue_seconds: float
    first_seconds: float
    send_seconds: float
    cpu_seconds: float
    peak_kib: list[int]


def run_sysmail(
    env: dict[str, str],
    recipients: int,
    account_id: str,
    processes: int,
    threads: int,
    window: int | None = None,
) -> SysmailRun:
    """One campaign to every contact, with sender workers of this window
    (None: the setting as the environment has it)."""
    from shared.campaigns import create_campaign, send_campaign
    from shared.db import get_engine, session_scope

    campaign = f"bench-{window or 'default'}"
    with session_scope() as session:
        create_campaign(session, campaign, account_id=account_id, template_id="bench")

    with sender_workers(env, processes, threads, window) as workers:
        started = time.perf_counter()
        started_at = datetime.now(UTC)
        cpu_before = sum(cpu_seconds(w.pid) for w in workers)
        with session_scope() as session:
            # As ``sysmail campaigns send`` does: each chunk released once
            # committed, so sending overlaps queuing.
            send_campaign(session, campaign, release=True)
        queued_at = time.perf_counter()

        # A light probe: the counting query it replaced cost PostgreSQL
        # 6.5 ms of CPU per poll, some 13% of a core taken from the run it
        # measures. Queuing is over here, so every email exists already.
        waiting = text(
            "SELECT EXISTS (SELECT 1 FROM emails WHERE campaign_id = :c "
            "AND status <> 'processed'), "
            "EXISTS (SELECT 1 FROM emails WHERE campaign_id = :c "
            "AND status = 'failed')"
        ).bindparams(c=campaign)
        with get_engine().connect() as conn:
            while True:
                unfinished, failed = conn.execute(waiting).one()
                conn.rollback()
                if failed:
                    raise RuntimeError("emails failed; see the worker logs")
                if not unfinished:
                    break
                time.sleep(0.05)
        finished = time.perf_counter()
        with get_engine().connect() as conn:
            processed = conn.execute(
                text(
                    "SELECT count(*) FROM emails "
                    "WHERE campaign_id = :c AND status = 'processed'"
                ),
                {"c": campaign},
            ).scalar_one()
        if processed != recipients:
            raise RuntimeError(f"{processed} of {recipients} emails processed")
        peaks = [peak_memory_kib(w.pid) for w in workers]
        cpu = sum(cpu_seconds(w.pid) for w in workers) - cpu_before
        with get_engine().connect() as conn:
            first, last = conn.execute(
                text(
                    "SELECT min(processed_at), max(processed_at) FROM emails "
                    "WHERE campaign_id = :c"
                ),
                {"c": campaign},
            ).one()

    return SysmailRun(
        seconds=finished - started,
        queue_seconds=queued_at - started,
        first_seconds=(first - started_at).total_seconds(),
        send_seconds=(last - first).total_seconds(),
        cpu_seconds=cpu,
        peak_kib=peaks,
    )


# -- the plain loop --------------------------------------------------------------


def build_messages(recipients: int) -> list[bytes]:
    """Messages like the campaign's, built before any clock starts."""
    from shared.mail.compose import Composition, compose, to_bytes

    def fill(source: str, n: int) -> str:
        return source.replace("{{ contact.name }}", f"Contact {n}").replace(
            "{{ contact.city }}", "Oslo"
        )

    return [
        to_bytes(
            compose(
                Composition(
                    message_id=f"<plain-{n}@bench.test>",
                    from_address="plain@bench.test",
                    to=[f"c{n:06}@bench.test"],
                    subject=fill(SUBJECT, n),
                    text=fill(TEXT, n),
                    html=fill(HTML, n),
                )
            )
        )
        for n in range(recipients)
    ]


def _send_over_one_connection(port: int, messages: list[bytes]) -> None:
    with smtplib.SMTP(HOST, port) as client:
        for n, message in enumerate(messages):
            client.sendmail("plain@bench.test", [f"c{n:06}@bench.test"], message)


def run_plain_loop(port: int, messages: list[bytes]) -> float:
    """Seconds for one smtplib connection to send every message in turn."""
    started = time.perf_counter()
    _send_over_one_connection(port, messages)
    return time.perf_counter() - started


def run_parallel_loops(port: int, messages: list[bytes], connections: int) -> float:
    """The same over several connections, one process each: the ceiling of
    what parallel connections can gain against this server on this machine,
    with no database, broker or message building in the way."""
    context = multiprocessing.get_context("fork")
    slices = [messages[k::connections] for k in range(connections)]
    started = time.perf_counter()
    processes = [
        context.Process(target=_send_over_one_connection, args=(port, part))
        for part in slices
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return time.perf_counter() - started


# -- report -------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=5000)
    parser.add_argument(
        "--processes", type=int, default=2, help="sender worker processes"
    )
    parser.add_argument("--threads", type=int, default=8, help="threads per worker")
    parser.add_argument(
        "--connections",
        type=int,
        default=5,
        help="connections of the parallel plain loop (the ceiling)",
    )
    parser.add_argument(
        "--wide-window",
        type=int,
        default=8,
        help="SYSMAIL_SENDER_WINDOW of the second sysmail run (0: no second run)",
    )
    args = parser.parse_args()
    n = args.recipients
    run = str(os.getpid())
    account_id = f"bench-{run}"

    with smtp_server() as server, services(run) as env:
        prepare(n, server.port, account_id)

        messages = build_messages(n)
        plain = run_plain_loop(server.port, messages)
        server.wait_for(n)
        ceiling = run_parallel_loops(server.port, messages, args.connections)
        server.wait_for(2 * n)
        runs = [("sysmail, end to end", None)]
        if args.wide_window:
            runs.append((f"sysmail, window {args.wide_window}", args.wide_window))
        results = []
        for label, window in runs:
            sent_before = server.count.value
            results.append(
                (
                    label,
                    run_sysmail(
                        env, n, account_id, args.processes, args.threads, window
                    ),
                )
            )
            server.wait_for(sent_before + n)

    plain_rate = n / plain
    ceiling_rate = n / ceiling
    rows = [
        ("recipients", f"{n}"),
        ("plain smtplib, 1 connection", f"{plain:.2f} s, {plain_rate:.0f} msg/s"),
        (
            f"plain smtplib, {args.connections} at once",
            f"{ceiling:.2f} s, {ceiling_rate:.0f} msg/s, "
            f"ratio {ceiling_rate / plain_rate:.2f} (the ceiling)",
        ),
        ("sender workers", f"{args.processes} processes x {args.threads} threads"),
    ]
    for label, result in results:
        rows.extend(_sysmail_rows(label, result, n, plain_rate))
    for label, value in rows:
        print(f"{label:<30}{value}")


def _sysmail_rows(
    label: str, result: SysmailRun, n: int, plain_rate: float
) -> list[tuple[str, str]]:
    rate = n / result.seconds
    peaks = ", ".join(f"{kib / 1024:.0f}" for kib in result.peak_kib)
    return [
        (label, f"{result.seconds:.2f} s, {rate:.0f} msg/s"),
        (
            "  queuing and releasing",
            f"{result.queue_seconds:.2f} s (sending overlaps it)",
        ),
        ("  first processed after", f"{result.first_seconds:.2f} s"),
        (
            "  first to last processed",
            f"{result.send_seconds:.2f} s, "
            f"{n / max(result.send_seconds, 1e-9):.0f} msg/s",
        ),
        (
            "  sender CPU, on the clock",
            f"{result.cpu_seconds:.2f} s, "
            f"{result.cpu_seconds / n * 1e6:.0f} us per email",
        ),
        ("  sender peak memory", f"{peaks} MiB (VmHWM of each process)"),
        ("  ratio sysmail / plain", f"{rate / plain_rate:.2f}"),
    ]


if __name__ == "__main__":
    main()
