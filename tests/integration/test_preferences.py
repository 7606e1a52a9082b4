"""`sysmail preferences show/set` on the real database."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from shared.db import session_scope
from shared.models import Account, Template
from shared.preferences import get_preferences


def sysmail(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def shown() -> dict[str, Any]:
    result = sysmail("preferences", "show", "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.fixture
def stored() -> None:
    """One account and one template the preferences may point to."""
    with session_scope() as session:
        session.add(Account(id="support", address="support@example.test"))
        session.add(Template(id="pw", subject="Password changed", text="t"))


def test_a_fresh_installation_shows_the_default_preferences() -> None:
    assert shown() == {
        "default_account": None,
        "archive_after_months": None,
        "resend_attempts": 0,
        "password_changed_template": None,
        "tag_prefix": "[",
        "tag_suffix": "]",
        "suspended": False,
    }


@pytest.mark.usefixtures("stored")
def test_set_changes_only_the_given_preferences() -> None:
    result = sysmail(
        "preferences",
        "set",
        "--default-account",
        "support",
        "--archive-after",
        "6",
        "--resend-attempts",
        "3",
        "--password-changed-template",
        "pw",
        "--tag-prefix",
        "[#",
        "--suspend",
    )
    sysmail("preferences", "set", "--tag-suffix", "}")

    assert result.exit_code == 0, result.output
    assert shown() == {
        "default_account": "support",
        "archive_after_months": 6,
        "resend_attempts": 3,
        "password_changed_template": "pw",
        "tag_prefix": "[#",
        "tag_suffix": "}",
        "suspended": True,
    }


@pytest.mark.usefixtures("stored")
def test_none_clears_the_default_account_and_archiving() -> None:
    sysmail("preferences", "set", "--default-account", "support")
    sysmail("preferences", "set", "--archive-after", "3", "--suspend")

    sysmail("preferences", "set", "--default-account", "none")
    sysmail("preferences", "set", "--archive-after", "none", "--resume")

    assert shown()["default_account"] is None
    assert shown()["archive_after_months"] is None
    assert shown()["suspended"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--default-account", "ghost"],
            "default account: account ghost does not exist",
        ),
        (
            ["--password-changed-template", "ghost"],
            "password-changed template: template ghost does not exist",
        ),
        (["--resend-attempts", "-1"], "resend attempts: must be 0..100"),
        (["--tag-prefix", "[\r\nBcc: x"], "tag prefix: must be a single line"),
        (["--tag-suffix", "x" * 21], "tag suffix: must be at most 20 characters"),
    ],
)
def test_a_bad_value_is_one_clear_error_and_changes_nothing(
    args: list[str], message: str
) -> None:
    before = shown()

    result = sysmail("preferences", "set", "--resend-attempts", "5", *args)

    assert result.exit_code == 1
    assert result.stderr == f"sysmail: error: {message}\n"
    assert shown() == before


def test_set_without_options_says_there_is_nothing_to_change() -> None:
    result = sysmail("preferences", "set")

    assert result.exit_code == 1
    assert result.stderr.startswith("sysmail: error: nothing to change")


def test_archive_after_accepts_only_the_listed_months() -> None:
    result = sysmail("preferences", "set", "--archive-after", "5")

    assert result.exit_code != 0
    assert shown()["archive_after_months"] is None


def test_get_preferences_creates_the_single_row_once() -> None:
    with session_scope() as session:
        first = get_preferences(session)
        first.resend_attempts = 2
    with session_scope() as session:
        again = get_preferences(session)

    assert again.id == 1 and again.resend_attempts == 2
