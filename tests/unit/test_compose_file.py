"""The compose file runs real sysmail commands, one service per stage."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from cli.main import cli
from shared.bus import STAGES

ROOT = Path(__file__).resolve().parents[2]

# RabbitMQ's built-in login, the one the local broker and the tests use too.
BROKER_GUEST = "guest"
URL_LOGIN = re.compile(r"://[^:/@]+:(?P<password>\$\{[^}]*\}|[^@]*)@")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def sysmail_services(compose: dict[str, Any]) -> dict[str, list[str]]:
    return {
        name: service["command"]
        for name, service in compose["services"].items()
        if service.get("image") == "sysmail:latest"
    }


def test_every_sysmail_service_command_is_a_real_subcommand(
    compose: dict[str, Any],
) -> None:
    runner = CliRunner()
    services = sysmail_services(compose)
    assert services, "no service runs the sysmail image"

    for name, command in services.items():
        result = runner.invoke(cli, [*command, "--help"])
        assert result.exit_code == 0, f"{name}: sysmail {' '.join(command)}"


def test_every_stage_has_its_own_service(compose: dict[str, Any]) -> None:
    commands = sysmail_services(compose).values()

    workers = [c[1:] for c in commands if c[0] == "worker"]

    assert sorted(w[0] for w in workers) == sorted(STAGES)
    assert all(len(w) == 1 for w in workers)


def test_scheduler_admin_and_migration_run_beside_the_backing_services(
    compose: dict[str, Any],
) -> None:
    commands = [tuple(c) for c in sysmail_services(compose).values()]
    services = compose["services"]

    assert ("scheduler",) in commands and ("admin",) in commands
    assert ("db", "upgrade") in commands
    assert services["migrate"]["restart"] == "no"
    assert {"postgres", "rabbitmq", "redis", "mailserver"} <= set(services)
    assert "management" in services["rabbitmq"]["image"]


def test_no_secret_has_a_default_in_the_compose_file(
    compose: dict[str, Any],
) -> None:
    env = compose["services"]["scheduler"]["environment"]

    for key in ("SYSMAIL_SECRET_KEY", "SYSMAIL_ADMIN_PASSWORD"):
        assert env[key].startswith("${") and ":?" in env[key]


def interpolated(value: str) -> bool:
    """``${VAR:?message}``: taken from the environment, refused when unset."""
    return bool(re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value))


def url_password(url: str) -> str | None:
    found = URL_LOGIN.search(url)
    return found.group("password") if found else None


def test_no_service_has_a_literal_password(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), name

        for key, value in environment.items():
            if "PASSWORD" in key or "SECRET" in key:
                assert interpolated(value), f"{name}: {key}"
            password = url_password(str(value))
            if password is not None and password != BROKER_GUEST:
                assert interpolated(password), f"{name}: {key}"


def test_postgres_takes_its_password_from_the_environment_as_every_service_does(
    compose: dict[str, Any],
) -> None:
    postgres = compose["services"]["postgres"]["environment"]
    urls = [
        compose["services"][name]["environment"]["SYSMAIL_DATABASE_URL"]
        for name in sysmail_services(compose)
    ]
    login = f"postgresql+psycopg://{postgres['POSTGRES_USER']}:"

    assert postgres["POSTGRES_PASSWORD"].startswith("${SYSMAIL_DB_PASSWORD:?")
    assert {url_password(url) for url in urls} == {postgres["POSTGRES_PASSWORD"]}
    assert all(url.startswith(login) for url in urls)


def test_the_generated_env_gives_the_local_processes_that_password() -> None:
    printed = subprocess.run(
        ["bash", str(ROOT / "scripts" / "dev-env.sh")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    env = dict(line.split("=", 1) for line in printed.splitlines() if "=" in line)
    password = env["SYSMAIL_DB_PASSWORD"]

    assert len(password) >= 32
    assert env["SYSMAIL_DATABASE_URL"] == (
        f"postgresql+psycopg://postgres:{password}@127.0.0.1:5432/sysmail"
    )
