from __future__ import annotations

from sqlalchemy import inspect

from shared import db, migrate


def test_upgrade_twice_leaves_the_schema_at_the_newest_revision(
    database_url: str,
) -> None:
    migrate.upgrade(database_url)
    migrate.upgrade(database_url)

    assert migrate.current(database_url) == "0001"
    tables = set(inspect(db.get_engine()).get_table_names())
    assert {"accounts", "emails", "mailbox_folders", "pop3_uidls"} <= tables
