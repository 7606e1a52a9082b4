"""``sysmail worker|scheduler|admin|run``: the long-running processes."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from config.logging import configure_logging
from config.settings import get_settings
from shared.bus import STAGES


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or Ctrl-C, so every process stops cleanly."""
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


@click.command("worker")
@click.argument("stages", nargs=-1, required=True, type=click.Choice(list(STAGES)))
@click.option(
    "--threads", type=click.IntRange(1, 64), help="Worker threads (default 8)."
)
def worker(stages: tuple[str, ...], threads: int | None) -> None:
    """Run the actors of the named stages until SIGTERM or Ctrl-C."""
    from services.worker import run_workers

    settings = get_settings()
    configure_logging(settings.log_level, "worker:" + ",".join(stages))
    run_workers(
        list(dict.fromkeys(stages)),
        threads or settings.worker_threads,
        _stop_on_signals(),
    )


@click.command("scheduler")
def scheduler() -> None:
    """Poll mailboxes, release due mail and archive, until SIGTERM or Ctrl-C."""
    from services.scheduler import run_forever

    settings = get_settings()
    configure_logging(settings.log_level, "scheduler")
    run_forever(settings.scheduler_tick, _stop_on_signals())


@click.command("admin")
def admin() -> None:
    """Serve the admin service (health endpoint) over HTTP."""
    import uvicorn

    from services.admin import create_app

    settings = get_settings()
    configure_logging(settings.log_level, "admin")
    uvicorn.run(
        create_app(),
        host=settings.admin_host,
        port=settings.admin_port,
        log_level=settings.log_level.lower(),
    )


@click.command("run")
def run() -> None:
    """Run scheduler, all six stages and admin in the foreground."""
    from services.supervisor import supervise

    configure_logging(get_settings().log_level, "run")
    sys.exit(supervise(_stop_on_signals()))


@click.command("demo")
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".run/demo"),
    show_default=True,
    help="Where the demo mail servers keep their files.",
)
def demo(run_dir: Path) -> None:
    """Start a demo: local IMAP and SMTP servers, a demo account with sample
    emails, and the whole system processing them."""
    from services.demo import run_demo

    configure_logging(get_settings().log_level, "demo")
    sys.exit(run_demo(run_dir.resolve(), _stop_on_signals()))


@click.command("doctor")
def doctor() -> None:
    """Check that PostgreSQL, RabbitMQ and Redis are reachable."""
    from shared.health import HOW_TO_START, check_all

    states = check_all(get_settings())
    for state in states:
        if state.ok:
            click.echo(f"{state.name} at {state.where}: ok")
        else:
            click.echo(
                f"sysmail: error: {state.name} is not reachable at {state.where}"
                f" ({state.detail}); {HOW_TO_START}",
                err=True,
            )
    if not all(state.ok for state in states):
        sys.exit(1)


COMMANDS: list[click.Command] = [worker, scheduler, admin, run, demo, doctor]
