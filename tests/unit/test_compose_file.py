"""The compose file runs real sysmail commands, one service per stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from cli.main import cli
from shared.bus import STAGES

ROOT = Path(__file__).resolve().parents[2]


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
