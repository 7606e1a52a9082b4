"""Alembic environment: migrates the database the settings point at."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

import shared.models  # noqa: F401  (registers every table)
from config.settings import get_settings
from shared.models.base import Base


def run() -> None:
    url = context.config.get_main_option("sqlalchemy.url") or (
        get_settings().database_url
    )
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
