# sysmail: `make run` starts the whole system, `make test` runs the tests.
# Both create the virtual environment and install what they need.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
SYSMAIL := $(VENV)/bin/sysmail
STAMP := $(VENV)/.installed
COMPOSE ?= docker compose

.PHONY: run demo test lint bench up down migrate venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found; install Python 3.11" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@touch $@

.env:
	@bash scripts/dev-env.sh > .env
	@echo "wrote .env with a generated secret key and admin password (git-ignored)"

migrate: $(STAMP) .env
	@$(SYSMAIL) doctor
	@$(SYSMAIL) db upgrade

run: migrate
	@$(SYSMAIL) run

demo: migrate
	@bash scripts/install-dovecot.sh
	@$(SYSMAIL) demo

test: $(STAMP)
	@bash scripts/install-dovecot.sh
	@$(PY) -m pytest -q

lint: $(STAMP)
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy

bench: $(STAMP)
	@bash scripts/install-dovecot.sh
	@$(PY) bench/outgoing.py --recipients $${N:-5000}

up: .env
	$(COMPOSE) up -d postgres rabbitmq redis mailserver

down:
	$(COMPOSE) down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
