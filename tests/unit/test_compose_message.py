"""Outgoing MIME messages: headers, parts, and no way to inject a header."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest

from shared.mail.compose import (
    Composition,
    InvalidHeader,
    build_raw,
    compose,
    to_bytes,
)

LONG_URL = "https://news.example.test/unsubscribe?token=" + "a1b2c3d4" * 20


# Every test runs with both builders: the email package's, and the direct one
# a campaign uses at queue time.
BUILDERS: dict[str, Callable[[Composition], bytes]] = {
    "email package": lambda c: to_bytes(compose(c)),
    "direct": build_raw,
}
CURRENT: dict[str, Callable[[Composition], bytes]] = {}


@pytest.fixture(autouse=True, params=sorted(BUILDERS))
def builder(request: pytest.FixtureRequest) -> str:
    CURRENT["build"] = BUILDERS[request.param]
    name: str = request.param
    return name


def composition(**fields: Any) -> Composition:
    values: dict[str, Any] = {
        "message_id": "<abc.123@example.test>",
        "from_address": "support@example.test",
        "from_name": "Example Support",
        "to": ["customer@example.test"],
        "subject": "Your order [#17]",
        "text": "It ships today.",
        "date": datetime(2026, 12, 3, 12, 0, tzinfo=UTC),
        **fields,
    }
    return Composition(**values)


def build(**fields: Any) -> bytes:
    return CURRENT["build"](composition(**fields))


def parse(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def header_lines(raw: bytes, name: str) -> list[str]:
    """The header's physical lines, continuation lines included."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii").split("\r\n")
    for i, line in enumerate(head):
        if line.lower().startswith(name.lower() + ":"):
            lines = [line]
            for more in head[i + 1 :]:
                if not more.startswith((" ", "\t")):
                    break
                lines.append(more)
            return lines
    raise AssertionError(f"no {name} header")


def test_the_message_carries_sender_recipient_subject_date_and_message_id() -> None:
    message = parse(build(reply_to="help@example.test"))

    assert message["From"] == "Example Support <support@example.test>"
    assert message["To"] == "customer@example.test"
    assert message["Reply-To"] == "help@example.test"
    assert message["Subject"] == "Your order [#17]"
    assert message["Message-ID"] == "<abc.123@example.test>"
    assert message["Date"] == "Thu, 03 Dec 2026 12:00:00 +0000"


def test_a_display_name_with_a_comma_and_accents_stays_one_sender() -> None:
    message = parse(build(from_name="Müller, Support"))

    assert message["From"].addresses[0].display_name == "Müller, Support"
    assert message["From"].addresses[0].addr_spec == "support@example.test"


def test_html_and_text_become_alternatives_and_files_attachments() -> None:
    raw = build(
        text="Plain wörds",
        html="<p>Rich wörds</p>",
        attachments=[("invoice.pdf", "application/pdf", b"%PDF-1.4 data")],
    )
    message = parse(raw)

    assert message.get_content_type() == "multipart/mixed"
    body = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert body is not None and body.get_content().strip() == "Plain wörds"
    assert html is not None and html.get_content().strip() == "<p>Rich wörds</p>"
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "invoice.pdf"
    assert attachment.get_content() == b"%PDF-1.4 data"
    # 7-bit on the wire: no server needs 8BITMIME.
    assert raw.isascii()


def test_replies_carry_in_reply_to_and_references() -> None:
    message = parse(
        build(
            in_reply_to="<first@example.test>",
            references="<zero@example.test> <first@example.test>",
        )
    )

    assert message["In-Reply-To"] == "<first@example.test>"
    assert message["References"].split() == [
        "<zero@example.test>",
        "<first@example.test>",
    ]


def test_automatic_mail_says_so_and_asks_for_no_auto_replies() -> None:
    message = parse(build(automatic=True))

    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Auto-Response-Suppress"] == "All"


def test_ordinary_mail_has_no_auto_submitted_header() -> None:
    assert parse(build())["Auto-Submitted"] is None


def test_a_long_list_unsubscribe_stays_plain_ascii_and_is_never_encoded() -> None:
    value = f"<mailto:news@example.test?subject=unsubscribe>, <{LONG_URL}>"
    raw = build(
        headers={
            "List-Unsubscribe": value,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
    )

    lines = header_lines(raw, "List-Unsubscribe")
    assert lines == [f"List-Unsubscribe: {value}"]
    assert "=?" not in lines[0]
    assert header_lines(raw, "List-Unsubscribe-Post") == [
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click"
    ]


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": "Hello\r\nBcc: victim@example.test"},
        {"subject": "Hello\nBcc: victim@example.test"},
        {"from_name": "Eve\r\nBcc: victim@example.test"},
        {"to": ["a@example.test\r\nBcc: victim@example.test"]},
        {"reply_to": "help@example.test\nBcc: victim@example.test"},
        {"headers": {"X-Campaign": "spring\r\nBcc: victim@example.test"}},
        {"headers": {"List-Unsubscribe": "<mailto:a@b>\r\nBcc: victim@x.test"}},
        {"attachments": [("a.pdf\r\nBcc: v@x.test", "application/pdf", b"x")]},
    ],
)
def test_a_line_break_in_any_field_is_refused_and_adds_no_header(
    fields: dict[str, Any],
) -> None:
    with pytest.raises(InvalidHeader):
        build(**fields)


def test_extra_headers_cannot_replace_the_sender_or_recipients() -> None:
    with pytest.raises(InvalidHeader, match="set by sysmail"):
        build(headers={"Bcc": "victim@example.test"})
    with pytest.raises(InvalidHeader, match="set by sysmail"):
        build(headers={"From": "ceo@example.test"})


def test_non_ascii_in_list_unsubscribe_is_refused_rather_than_encoded() -> None:
    with pytest.raises(InvalidHeader, match="ASCII"):
        build(headers={"List-Unsubscribe": "<https://exämple.test/u>"})


def test_plain_ascii_bodies_stay_readable_on_the_wire() -> None:
    raw = build(text="Hello,\nit ships today.", html="<p>Hello</p>")

    assert b"Content-Transfer-Encoding: 7bit" in raw
    assert b"\r\nHello,\r\nit ships today.\r\n" in raw
