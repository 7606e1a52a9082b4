"""Process settings: SYSMAIL_ variables and a .env, read when first asked for."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import Settings, get_settings, reset_settings


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No SYSMAIL_ variable set, and an empty working directory."""
    for key in list(os.environ):
        if key.startswith("SYSMAIL_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    reset_settings()
    yield tmp_path
    reset_settings()


def test_settings_are_read_from_sysmail_variables(
    bare: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYSMAIL_REDIS_URL", "redis://cache.test:6380/2")
    monkeypatch.setenv("REDIS_URL", "redis://unprefixed.test:6379/0")

    assert get_settings().redis_url == "redis://cache.test:6380/2"


def test_a_dotenv_in_the_working_directory_is_read(bare: Path) -> None:
    (bare / ".env").write_text(
        "SYSMAIL_SECRET_KEY=key-from-dotenv\n"
        "SYSMAIL_DB_PASSWORD=only-for-docker-compose\n"
        "SYSMAIL_DATABASE_URL=postgresql+psycopg://postgres:pw@127.0.0.1/x\n"
    )

    settings = get_settings()

    assert settings.secret_key is not None
    assert settings.secret_key.get_secret_value() == "key-from-dotenv"
    assert settings.database_url.endswith(":pw@127.0.0.1/x")


def test_the_environment_wins_over_the_dotenv(
    bare: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (bare / ".env").write_text("SYSMAIL_ADMIN_USER=from-dotenv\n")
    monkeypatch.setenv("SYSMAIL_ADMIN_USER", "from-environment")

    assert get_settings().admin_user == "from-environment"


def test_secret_key_and_admin_password_have_no_default(bare: Path) -> None:
    settings = get_settings()

    assert settings.secret_key is None
    assert settings.admin_password is None
    assert Settings.model_fields["secret_key"].default is None
    assert Settings.model_fields["admin_password"].default is None


def test_secrets_are_not_shown_when_settings_are_printed(
    bare: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYSMAIL_SECRET_KEY", "very-secret-key")
    monkeypatch.setenv("SYSMAIL_ADMIN_PASSWORD", "very-secret-password")

    shown = repr(get_settings())

    assert "very-secret-key" not in shown
    assert "very-secret-password" not in shown


def test_settings_are_built_when_asked_for_not_at_import(bare: Path) -> None:
    # Settings that cannot be built: a module that built them on import fails.
    # The workers are left out: a dramatiq actor is declared with its broker,
    # so importing a stage's module reads the broker URL.
    script = (
        "import config.settings, cli.main, shared.db, shared.bus, shared.migrate\n"
        "import services.scheduler, services.admin, services.supervisor\n"
        "print('imported', flush=True)\n"
        "config.settings.get_settings()\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=bare,
        env={**os.environ, "SYSMAIL_WORKER_THREADS": "many"},
        capture_output=True,
        text=True,
    )

    assert result.stdout == "imported\n", result.stderr
    assert result.returncode != 0
    assert "worker_threads" in result.stderr


def test_settings_are_kept_until_reset(
    bare: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = get_settings()
    monkeypatch.setenv("SYSMAIL_WORKER_THREADS", "3")

    assert get_settings() is first
    reset_settings()
    assert get_settings() is not first
    assert get_settings().worker_threads == 3


@pytest.mark.parametrize(
    ("name", "value"),
    [("SYSMAIL_SENDER_WINDOW", "0"), ("SYSMAIL_WORKER_THREADS", "many")],
)
def test_a_bad_setting_is_one_line_naming_it(bare: Path, name: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "worker", "sender"],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, name: value},
        capture_output=True,
        text=True,
    )

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"sysmail: error: setting {name}: ")
    assert repr(value) in result.stderr
