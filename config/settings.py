"""Process settings, read from the environment and a git-ignored ``.env``.

Only what a process needs before it can reach PostgreSQL lives here; every
account, preference and template is configuration in the database.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SYSMAIL_", env_file=".env", extra="ignore"
    )

    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/sysmail"
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    redis_url: str = "redis://127.0.0.1:6379/0"

    # No default: a key is generated into the git-ignored .env by `make run`.
    secret_key: SecretStr | None = None

    admin_user: str = "admin"
    admin_password: SecretStr | None = None
    admin_host: str = "127.0.0.1"
    admin_port: int = 8025

    # Where one-click unsubscribe links of mass email point (an https URL of
    # the admin service); without it they carry only the mailto: address.
    unsubscribe_url: str | None = None

    # Extra certificate authorities to trust for mail servers (PEM file).
    ca_file: str | None = None

    log_level: str = "INFO"
    # Seconds between two passes of the scheduler.
    scheduler_tick: float = 2.0
    # Threads per worker process.
    worker_threads: int = 8
    # An email still in_process this long after its claim is taken back.
    claim_timeout: int = 600
    # Emails a sender thread may have had accepted by the server without
    # their processed status committed yet; recorded together once so many
    # are. 1 keeps the window of a crash smallest, at a commit per email.
    sender_window: int = Field(default=1, ge=1)


class SettingsError(ValueError):
    """A setting in the environment or ``.env`` has a value it cannot take."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "SYSMAIL_" + str(first["loc"][0]).upper() if first["loc"] else "?"
        raise SettingsError(
            f"setting {name}: {first['msg']} (got {first.get('input')!r})"
        ) from exc


def reset_settings() -> None:
    """Forget the cached settings, so the next call reads the environment."""
    get_settings.cache_clear()
