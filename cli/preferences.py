"""``sysmail preferences``: the installation's email preferences."""

from __future__ import annotations

from typing import Any

import click

from cli.output import emit, json_option
from shared.db import session_scope
from shared.errors import ConfigError
from shared.preferences import get_preferences, preferences_to_dict, update_preferences

ARCHIVE_CHOICES = ["none", "0", "3", "6", "9", "12"]


@click.group("preferences")
def preferences() -> None:
    """Email preferences: one set for the whole installation."""


@preferences.command("show")
@json_option
def show(as_json: bool) -> None:
    """The preferences every stage works with."""
    with session_scope() as session:
        data = preferences_to_dict(get_preferences(session))
    emit(data, as_json)


@preferences.command("set")
@click.option(
    "--default-account",
    metavar="ID|none",
    help="Account for automatic system mail; none: no default.",
)
@click.option(
    "--archive-after",
    type=click.Choice(ARCHIVE_CHOICES),
    help="Archive processed emails older than this many months; none: never.",
)
@click.option(
    "--resend-attempts",
    type=int,
    help="How often sending an email may fail before it is failed.",
)
@click.option(
    "--password-changed-template",
    metavar="ID|none",
    help="Template sent when a user's password changes; none: no template.",
)
@click.option("--tag-prefix", help="Text before the system tag in subjects.")
@click.option("--tag-suffix", help="Text after the system tag in subjects.")
@click.option(
    "--suspend/--resume",
    default=None,
    help="Stop, or start again, all sending and receiving.",
)
@json_option
def set_preferences(
    default_account: str | None,
    archive_after: str | None,
    resend_attempts: int | None,
    password_changed_template: str | None,
    tag_prefix: str | None,
    tag_suffix: str | None,
    suspend: bool | None,
    as_json: bool,
) -> None:
    """Change the given preferences; the others stay as they are.

    Every value is checked first: with one bad value nothing changes.
    """
    changes: dict[str, Any] = {}
    if default_account is not None:
        changes["default_account_id"] = _or_none(default_account)
    if archive_after is not None:
        changes["archive_after_months"] = (
            None if archive_after == "none" else int(archive_after)
        )
    if resend_attempts is not None:
        changes["resend_attempts"] = resend_attempts
    if password_changed_template is not None:
        changes["password_changed_template_id"] = _or_none(password_changed_template)
    if tag_prefix is not None:
        changes["tag_prefix"] = tag_prefix
    if tag_suffix is not None:
        changes["tag_suffix"] = tag_suffix
    if suspend is not None:
        changes["suspended"] = suspend
    if not changes:
        raise ConfigError("nothing to change; see `sysmail preferences set --help`")

    with session_scope() as session:
        data = preferences_to_dict(update_preferences(session, **changes))
    emit(data, as_json)


def _or_none(value: str) -> str | None:
    return None if value.lower() == "none" else value


COMMANDS = [preferences]
