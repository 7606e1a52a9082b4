"""Alembic migrations of the sysmail schema."""
