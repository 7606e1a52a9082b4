"""The runtime commands say what is wrong before anything starts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from cli.main import cli
from config.settings import reset_settings
from services.admin import create_app
from services.devmail import free_port


def test_doctor_names_each_unreachable_service_and_how_to_start_it() -> None:
    closed = free_port()
    env = {
        "SYSMAIL_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{closed}/%2F",
        "SYSMAIL_REDIS_URL": f"redis://127.0.0.1:{closed}/0",
    }

    reset_settings()
    result = CliRunner().invoke(cli, ["doctor"], env=env)
    reset_settings()

    assert result.exit_code == 1
    assert "PostgreSQL at 127.0.0.1:5432: ok" in result.stdout
    errors = result.stderr.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(
        f"sysmail: error: RabbitMQ is not reachable at 127.0.0.1:{closed}"
    )
    assert errors[1].startswith(
        f"sysmail: error: Redis is not reachable at 127.0.0.1:{closed}"
    )
    assert all("make up" in line for line in errors)


def test_doctor_passes_when_every_service_answers() -> None:
    result = CliRunner().invoke(cli, ["doctor"])

    assert result.exit_code == 0, result.stderr
    assert result.stdout.count(": ok") == 3


def test_a_command_that_cannot_reach_postgresql_says_so_in_one_line() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/sysmail"

    reset_settings()
    result = CliRunner().invoke(
        cli, ["cases", "list"], env={"SYSMAIL_DATABASE_URL": url}
    )
    reset_settings()

    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(
        "sysmail: error: cannot use PostgreSQL at 127.0.0.1"
    )


def test_admin_health_answers_ok_while_the_database_answers() -> None:
    client = TestClient(create_app())

    response = client.get("/health")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_admin_health_answers_503_when_the_database_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/sysmail"
    monkeypatch.setenv("SYSMAIL_DATABASE_URL", url)
    reset_settings()
    try:
        response = TestClient(create_app()).get("/health")
    finally:
        monkeypatch.undo()
        reset_settings()

    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
