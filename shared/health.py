"""Are the backing services reachable? Said per service, with how to start it."""

from __future__ import annotations

from dataclasses import dataclass

import pika
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from config.settings import Settings

HOW_TO_START = "start it, or run `make up` to start the services in containers"


@dataclass(frozen=True)
class ServiceState:
    name: str
    where: str
    ok: bool
    detail: str = ""


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def check_postgres(settings: Settings) -> ServiceState:
    url = make_url(settings.database_url)
    where = f"{url.host}:{url.port or 5432}"
    # The server, not the database: `db upgrade` creates a missing database.
    engine = create_engine(
        url.set(database="postgres"), connect_args={"connect_timeout": 3}
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return ServiceState("PostgreSQL", where, False, _first_line(exc))
    finally:
        engine.dispose()
    return ServiceState("PostgreSQL", where, True)


def check_rabbitmq(settings: Settings) -> ServiceState:
    params = pika.URLParameters(settings.broker_url)
    params.socket_timeout = 3
    params.connection_attempts = 1
    where = f"{params.host}:{params.port}"
    try:
        pika.BlockingConnection(params).close()
    except Exception as exc:
        return ServiceState("RabbitMQ", where, False, _first_line(exc) or "refused")
    return ServiceState("RabbitMQ", where, True)


def check_redis(settings: Settings) -> ServiceState:
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
    kwargs = client.connection_pool.connection_kwargs
    where = f"{kwargs.get('host')}:{kwargs.get('port')}"
    try:
        client.ping()
    except Exception as exc:
        return ServiceState("Redis", where, False, _first_line(exc))
    finally:
        client.close()
    return ServiceState("Redis", where, True)


def check_all(settings: Settings) -> list[ServiceState]:
    return [check(settings) for check in (check_postgres, check_rabbitmq, check_redis)]
