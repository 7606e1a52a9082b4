"""One base error; temporary and permanent failures carry the server's words."""

from __future__ import annotations


class SysmailError(Exception):
    """Base of every error sysmail raises on purpose."""


class ConfigError(SysmailError):
    """A configuration file or value is wrong; nothing was written."""


class NotFound(SysmailError):
    """A named object does not exist."""


class DeliveryError(SysmailError):
    """Talking to a mail server failed."""

    def __init__(
        self, message: str, *, code: int | None = None, reply: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reply = reply


class TemporaryFailure(DeliveryError):
    """Worth trying again later: 4xx, refused or dropped connection, timeout."""


class PermanentFailure(DeliveryError):
    """Trying again will not help: 5xx reply, authentication failure."""
