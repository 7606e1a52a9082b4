"""The direct builder and the email package's agree on every message."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest

from shared.mail.compose import Composition, build_raw, compose, to_bytes

LONG_URL = "https://news.example.test/unsubscribe?token=" + "a1b2c3d4" * 20
BASE: dict[str, Any] = {
    "message_id": "<abc.123@example.test>",
    "from_address": "support@example.test",
    "from_name": "Example Support",
    "to": ["customer@example.test"],
    "subject": "Your order [#17]",
    "text": "It ships today.",
    "date": datetime(2026, 12, 3, 12, 0, tzinfo=UTC),
}


def parse(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def summary(raw: bytes) -> tuple[dict[str, str], list[tuple[str, Any]]]:
    """Headers (a boundary aside) and parts, as a mail client reads them."""
    message = parse(raw)
    headers = {
        name.lower(): str(value)
        for name, value in message.items()
        if not (name.lower() == "content-type" and message.is_multipart())
    }
    headers["type"] = message.get_content_type()
    parts = [
        (part.get_content_type(), part.get_content())
        for part in message.walk()
        if not part.is_multipart()
    ]
    return headers, parts


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"html": "<p>It ships today.</p>"},
        {"text": "Grüße aus Malmö\nzweite Zeile\n", "html": "<p>Grüße</p>"},
        {"text": "a line far longer than seventy-eight characters " * 4},
        {"text": "", "html": ""},
        {"text": "=3D and a dot\n.\nalone"},
        {"from_name": "Müller, Support", "subject": "Bestätigung " * 12},
        {"from_name": 'Doe, "J" & Co', "to": ['"odd one"@example.test']},
        {"subject": "word " * 40, "to": [f"c{n}@example.test" for n in range(9)]},
        {"subject": "x" * 120},
        {
            "automatic": True,
            "reply_to": "help@example.test",
            "in_reply_to": "<first@example.test>",
            "references": "<zero@example.test> <first@example.test>",
            "headers": {
                "List-Unsubscribe": f"<{LONG_URL}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                "Precedence": "bulk",
                "X-Campaign": "spring ünd summer",
            },
        },
    ],
)
def test_both_builders_give_a_mail_client_the_same_message(
    fields: dict[str, Any],
) -> None:
    made = Composition(**{**BASE, **fields})

    direct = build_raw(made)
    standard = to_bytes(compose(made))

    assert summary(direct) == summary(standard)
    assert direct.isascii()
    assert all(len(line) <= 998 for line in direct.split(b"\r\n"))
