#!/usr/bin/env bash
# Rewrite the initial migration from the models, against a scratch database.
# Only while the schema is unreleased; later changes get migrations of their own.
set -euo pipefail
db=sysmail_migration_scratch
url="postgresql+psycopg://postgres@127.0.0.1:5432/$db"
psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS $db" postgres
psql -h 127.0.0.1 -U postgres -q -c "CREATE DATABASE $db" postgres
rm -f migrations/versions/0001_initial.py
.venv/bin/python - "$url" <<'PY'
import sys
from alembic import command
from shared.migrate import alembic_config
command.revision(alembic_config(sys.argv[1]), message="initial schema",
                 autogenerate=True, rev_id="0001")
PY
mv migrations/versions/0001_initial_schema.py migrations/versions/0001_initial.py
.venv/bin/ruff format -q migrations/versions/0001_initial.py
.venv/bin/ruff check -q --fix migrations/versions/0001_initial.py || true
psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE $db" postgres
