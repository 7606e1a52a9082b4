"""Passwords at rest: encrypted with a key derived from SYSMAIL_SECRET_KEY."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from config.settings import get_settings
from shared.errors import ConfigError


def _fernet() -> Fernet:
    secret = get_settings().secret_key
    if secret is None or not secret.get_secret_value():
        raise ConfigError(
            "SYSMAIL_SECRET_KEY is not set; it is needed to store passwords"
        )
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"sysmail-passwords"
    ).derive(secret.get_secret_value().encode())
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(password: str) -> bytes:
    return _fernet().encrypt(password.encode())


def decrypt(token: bytes) -> str:
    try:
        return _fernet().decrypt(token).decode()
    except InvalidToken as exc:
        raise ConfigError(
            "a stored password cannot be decrypted: SYSMAIL_SECRET_KEY changed"
        ) from exc
