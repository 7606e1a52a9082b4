"""Fixtures shared by every test: settings that point at a database,
Redis index and RabbitMQ virtual host of this test run alone, so that runs
(and `make run`) on one machine never see each other's data."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import create_engine, text

from config.settings import reset_settings
from shared import db as shared_db
from shared import migrate
from shared.bus import STAGES, install_broker
from shared.models import Base

pytest_plugins = ["tests.fixtures.mailservers"]

RUN = f"{os.getpid()}"
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


def _sql(statement: str) -> None:
    engine = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(statement))
    engine.dispose()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = f"sysmail_test_{RUN}"
    _sql(f'DROP DATABASE IF EXISTS "{name}"')
    url = f"{PG}/{name}"
    migrate.upgrade(url)
    yield url
    shared_db.reset_engines()
    _sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    return f"redis://127.0.0.1:6379/{1 + int(RUN) % 15}"


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    """A RabbitMQ virtual host of this run, made with rabbitmqctl."""
    vhost = f"sysmail-test-{RUN}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest"] + [".*"] * 3,
        check=True,
    )
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False)


@pytest.fixture
def broker(broker_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This run's RabbitMQ vhost as this process's broker, every stage's
    queue declared and empty; its URL."""
    monkeypatch.setenv("SYSMAIL_BROKER_URL", broker_url)
    reset_settings()
    installed = install_broker()
    for stage in STAGES.values():
        installed.declare_queue(stage.queue)
    installed.flush_all()
    yield broker_url
    installed.flush_all()
    installed.close()
    reset_settings()


@pytest.fixture(scope="session", autouse=True)
def environment(database_url: str, redis_url: str) -> Iterator[dict[str, str]]:
    """The SYSMAIL_ settings of this run, also handed to child processes."""
    env = {
        "SYSMAIL_DATABASE_URL": database_url,
        "SYSMAIL_REDIS_URL": redis_url,
        "SYSMAIL_SECRET_KEY": "test-secret-key-of-this-run",
        "SYSMAIL_ADMIN_PASSWORD": "test-admin-password",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    reset_settings()
    shared_db.reset_engines()
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_settings()


@pytest.fixture(autouse=True)
def clean_database(database_url: str) -> Iterator[None]:
    """Every test starts with empty tables and an empty Redis index."""
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with shared_db.get_engine().begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    redis.Redis.from_url(os.environ["SYSMAIL_REDIS_URL"]).flushdb()
    yield
