"""Which mail counts as automatic: it is never answered."""

from __future__ import annotations

import pytest

from shared.inbound.automatic import automatic_reason
from shared.inbound.parse import parse_email
from tests.unit.test_parse import DSN

OWN = {"support@example.test", "noreply@example.test"}


def _reason(headers: str, sender: str = "Ann <ann@example.org>") -> str | None:
    raw = f"From: {sender}\r\nSubject: hello\r\n{headers}\r\nbody\r\n"
    return automatic_reason(parse_email(raw.encode()), OWN)


def test_mail_a_person_wrote_is_not_automatic() -> None:
    assert _reason("Message-ID: <a@example.org>\r\n") is None


def test_auto_submitted_no_is_not_automatic() -> None:
    assert _reason("Auto-Submitted: no\r\n") is None


@pytest.mark.parametrize(
    "header",
    [
        "Auto-Submitted: auto-replied",
        "Auto-Submitted: auto-generated",
        "Precedence: bulk",
        "Precedence: junk",
        "Precedence: list",
        "Precedence: auto_reply",
        "X-Auto-Response-Suppress: All",
        "X-Autoreply: yes",
        "List-Id: <news.example.org>",
        "List-Unsubscribe: <mailto:leave@example.org>",
        "Return-Path: <>",
    ],
)
def test_each_loop_protection_header_marks_mail_automatic(header: str) -> None:
    reason = _reason(f"{header}\r\n")

    assert reason is not None
    assert header.split(":")[0].lower() in reason.lower() or "bounce" in reason


def test_precedence_first_class_is_not_automatic() -> None:
    assert _reason("Precedence: first-class\r\n") is None


def test_delivery_report_is_automatic() -> None:
    reason = automatic_reason(parse_email(DSN), set())

    assert reason is not None


def test_multipart_report_is_automatic_even_from_a_person_address() -> None:
    report = DSN.replace(b"MAILER-DAEMON@mx.example.org", b"ann@example.org")

    reason = automatic_reason(parse_email(report), set())

    assert reason is not None and "multipart/report" in reason


def test_mail_from_the_systems_own_address_is_automatic_whatever_the_case() -> None:
    reason = _reason("", sender="Support <SUPPORT@example.test>")

    assert reason is not None and "own address" in reason


@pytest.mark.parametrize(
    "sender",
    [
        "MAILER-DAEMON@mx.example.org",
        "postmaster@example.org",
        "noreply@shop.example.org",
        "no-reply@shop.example.org",
        "noreply-orders@shop.example.org",
        "donotreply@shop.example.org",
    ],
)
def test_mail_system_senders_are_automatic(sender: str) -> None:
    assert _reason("", sender=sender) is not None


def test_a_person_whose_name_contains_noreply_elsewhere_is_not_automatic() -> None:
    assert _reason("", sender="reply.noreply.fan@example.org") is None
