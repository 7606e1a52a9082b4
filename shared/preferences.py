"""The installation's email preferences: one row every stage reads."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.errors import ConfigError, NotFound
from shared.models import Account, Preferences, Template
from shared.models.accounts import ARCHIVE_AFTER

log = logging.getLogger(__name__)

MAX_RESEND_ATTEMPTS = 100
MAX_TAG_LENGTH = 20


def get_preferences(session: Session) -> Preferences:
    """The preferences, created with their defaults the first time they are read."""
    preferences = session.get(Preferences, 1)
    if preferences is not None:
        return preferences

    # Two processes may read them first at the same moment; one insert wins.
    session.execute(insert(Preferences).values(id=1).on_conflict_do_nothing())
    preferences = session.get(Preferences, 1)
    if preferences is None:
        raise AssertionError("the preferences row was just inserted")
    return preferences


def find_preferences(session: Session) -> Preferences | None:
    """The preferences if they were ever stored; reads without writing."""
    return session.get(Preferences, 1)


def update_preferences(session: Session, **changes: Any) -> Preferences:
    """Change the named settings after checking every one; others stay.

    Keys: default_account_id, archive_after_months, resend_attempts,
    password_changed_template_id, tag_prefix, tag_suffix, suspended.
    """
    _check(session, changes)
    preferences = get_preferences(session)
    for key, value in changes.items():
        setattr(preferences, key, value)
    log.info("preferences changed: %s", ", ".join(sorted(changes)) or "nothing")
    return preferences


def _check(session: Session, changes: dict[str, Any]) -> None:
    known = {
        "default_account_id",
        "archive_after_months",
        "resend_attempts",
        "password_changed_template_id",
        "tag_prefix",
        "tag_suffix",
        "suspended",
    }
    unknown = set(changes) - known
    if unknown:
        raise ConfigError(f"unknown preference: {', '.join(sorted(unknown))}")

    account_id = changes.get("default_account_id")
    if account_id is not None and session.get(Account, account_id) is None:
        raise NotFound(f"default account: account {account_id} does not exist")
    template_id = changes.get("password_changed_template_id")
    if template_id is not None and session.get(Template, template_id) is None:
        raise NotFound(
            f"password-changed template: template {template_id} does not exist"
        )

    months = changes.get("archive_after_months")
    if months is not None and months not in ARCHIVE_AFTER:
        allowed = ", ".join(str(m) for m in ARCHIVE_AFTER)
        raise ConfigError(f"archive after: must be none or one of {allowed} months")
    attempts = changes.get("resend_attempts")
    if attempts is not None and not 0 <= attempts <= MAX_RESEND_ATTEMPTS:
        raise ConfigError(f"resend attempts: must be 0..{MAX_RESEND_ATTEMPTS}")
    for key in ("tag_prefix", "tag_suffix"):
        tag = changes.get(key)
        if tag is None:
            continue
        if len(tag) > MAX_TAG_LENGTH:
            raise ConfigError(
                f"{key.replace('_', ' ')}: must be at most {MAX_TAG_LENGTH} characters"
            )
        # The tag goes into every subject; a line break would end the header.
        if any(c in tag for c in "\r\n\0"):
            raise ConfigError(f"{key.replace('_', ' ')}: must be a single line")
    for key in ("resend_attempts", "tag_prefix", "tag_suffix", "suspended"):
        if key in changes and changes[key] is None:
            raise ConfigError(f"{key.replace('_', ' ')}: cannot be empty")


def preferences_to_dict(preferences: Preferences) -> dict[str, Any]:
    """The preferences as `preferences show` prints them."""
    return {
        "default_account": preferences.default_account_id,
        "archive_after_months": preferences.archive_after_months,
        "resend_attempts": preferences.resend_attempts,
        "password_changed_template": preferences.password_changed_template_id,
        "tag_prefix": preferences.tag_prefix,
        "tag_suffix": preferences.tag_suffix,
        "suspended": preferences.suspended,
    }
