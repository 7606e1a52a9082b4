from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from shared import db, migrate
from shared.models import Base


def test_upgrade_twice_leaves_the_schema_at_the_newest_revision(
    database_url: str,
) -> None:
    migrate.upgrade(database_url)
    migrate.upgrade(database_url)

    assert migrate.current(database_url) == "0001"
    tables = set(inspect(db.get_engine()).get_table_names())
    assert {"accounts", "emails", "mailbox_folders", "pop3_uidls"} <= tables


def test_the_migrations_build_exactly_the_schema_the_models_declare(
    database_url: str,
) -> None:
    migrate.upgrade(database_url)

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()

    assert differences == []
