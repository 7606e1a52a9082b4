"""Engine and sessions for PostgreSQL, built on first use, never at import."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from sqlalchemy import JSON, Connection, Engine, Table, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from config.settings import get_settings

_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker[Session]] = {}


def get_engine() -> Engine:
    url = get_settings().database_url
    if url not in _engines:
        _engines[url] = create_engine(
            url, pool_pre_ping=True, pool_size=10, max_overflow=10
        )
    return _engines[url]


def reset_engines() -> None:
    """Close every pooled connection; the next use connects anew."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
    _factories.clear()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A unit of work: commits when the block ends, rolls back when it raises."""
    url = get_settings().database_url
    if url not in _factories:
        _factories[url] = sessionmaker(get_engine(), expire_on_commit=False)
    session = _factories[url]()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def driver_autocommit() -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection as the driver's own, each statement its own commit.

    For hot paths: SQLAlchemy's handling of a statement can cost more CPU
    than PostgreSQL spends running it. The pool restores the connection's
    isolation level when it is given back.
    """
    engine = get_engine()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        driver = conn.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        yield driver


def copy_rows(
    connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert rows with COPY, in the connection's transaction.

    For thousands of rows COPY costs a fraction of INSERT, on both sides.
    Every row names the same columns; a column left out takes its Python
    default, as with INSERT, or else the server's.
    """
    if not rows:
        return
    given = list(rows[0])
    defaults = [
        (column.name, column.default)
        for column in table.columns
        if column.name not in given
        and column.default is not None
        and (column.default.is_scalar or column.default.is_callable)
    ]
    names = given + [name for name, _ in defaults]
    json = {c.name for c in table.columns if isinstance(c.type, JSON)}
    filled = [
        default.arg if default.is_scalar else default.arg(None)  # type: ignore[attr-defined]
        for _, default in defaults
    ]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    with driver.cursor().copy(statement) as copy:
        for row in rows:
            values = [row[name] for name in given] + filled
            copy.write_row(
                [
                    Jsonb(v) if n in json and v is not None else v
                    for n, v in zip(names, values, strict=True)
                ]
            )


def create_database_if_missing(url: str) -> bool:
    """Create the database a URL names, when the server lacks it."""
    target = make_url(url)
    name = target.database
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).scalar()
            if exists:
                return False
            conn.execute(text(f'CREATE DATABASE "{name}"'))
            return True
    finally:
        admin.dispose()
