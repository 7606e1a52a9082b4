"""Reading received mail: charsets, encoded words, broken MIME, bounces."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage

from shared.inbound.parse import parse_email

DSN = b"""From: MAILER-DAEMON@mx.example.org
To: support@example.test
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn-1@mx.example.org>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

The mail could not be delivered.
--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; gone@example.org
Action: failed
Status: 5.1.1

--B
Content-Type: message/rfc822

Message-ID: <sent-17@example.test>
From: support@example.test
To: gone@example.org
Subject: Your order

Hello.
--B--
"""


def test_encoded_words_in_subject_and_sender_name_are_decoded() -> None:
    parsed = parse_email(
        b"From: =?iso-8859-1?q?J=F6rg_M=FCller?= <Joerg@Example.ORG>\r\n"
        b'To: support@example.test, "Bea" <bea@example.test>\r\n'
        b"Subject: =?utf-8?b?w4RwZmVs?= und =?koi8-r?b?8NLJ18XU?=\r\n"
        b"Message-ID: <m1@example.org>\r\n\r\nHallo\r\n"
    )

    assert parsed.subject == "Äpfel und Привет"
    assert parsed.from_name == "Jörg Müller"
    assert parsed.from_address == "Joerg@Example.ORG"
    assert parsed.to_addresses == ("support@example.test", "bea@example.test")
    assert parsed.message_id == "<m1@example.org>"


def test_body_in_a_declared_charset_is_decoded() -> None:
    parsed = parse_email(
        b"From: a@example.org\r\nContent-Type: text/plain; charset=iso-8859-2\r\n"
        b"\r\nZa\xbf\xf3\xb3\xe6 g\xea\xb6l\xb1 ja\xbc\xf1\r\n"
    )

    assert parsed.text.strip() == "Zażółć gęślą jaźń"


def test_body_with_an_unknown_charset_is_still_read() -> None:
    parsed = parse_email(
        b"From: a@example.org\r\nContent-Type: text/plain; charset=x-no-such\r\n"
        b"\r\ncaf\xc3\xa9 and caf\xe9\r\n"
    )

    assert parsed.text.startswith("caf")
    assert "and" in parsed.text


def test_multipart_without_closing_boundary_still_yields_text_and_html() -> None:
    parsed = parse_email(
        b"From: a@example.org\r\nSubject: broken\r\nContent-Type: multipart/"
        b'alternative; boundary="X"\r\n\r\n--X\r\nContent-Type: text/plain; '
        b"charset=utf-8\r\n\r\nplain words\r\n--X\r\nContent-Type: text/html\r\n"
        b"\r\n<p>html words</p>\r\n"
    )

    assert parsed.subject == "broken"
    assert "plain words" in parsed.text
    assert parsed.html is not None and "html words" in parsed.html
    assert parsed.defects


def test_garbage_without_headers_is_read_without_raising() -> None:
    parsed = parse_email(b"\x00\xff\xfe this is not an email at all")

    assert parsed.message_id is None
    assert parsed.from_address is None
    assert parsed.subject == ""


def test_missing_message_id_is_none() -> None:
    parsed = parse_email(b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n")

    assert parsed.message_id is None


def test_message_id_without_angle_brackets_is_kept_in_brackets() -> None:
    parsed = parse_email(b"From: a@example.org\r\nMessage-ID: abc@host\r\n\r\n.")

    assert parsed.message_id == "<abc@host>"


def test_thread_headers_are_split_into_message_ids_in_order() -> None:
    parsed = parse_email(
        b"From: a@example.org\r\nIn-Reply-To: <p@x> (the last one)\r\n"
        b"References: <r1@x>\r\n <r2@x> <p@x>\r\n\r\n."
    )

    assert parsed.in_reply_to == ("<p@x>",)
    assert parsed.references == ("<r1@x>", "<r2@x>", "<p@x>")


def test_sender_name_with_a_comma_stays_one_address() -> None:
    parsed = parse_email(
        b"From: =?utf-8?q?M=C3=BCller,_J=C3=B6rg?= <j@example.org>\r\n\r\n."
    )

    assert parsed.from_name == "Müller, Jörg"
    assert parsed.from_address == "j@example.org"


def test_date_is_read_with_its_zone_and_a_bad_date_is_none() -> None:
    good = parse_email(b"Date: Tue, 1 Dec 2026 10:00:00 +0100\r\n\r\n.")
    bad = parse_email(b"Date: the day before yesterday\r\n\r\n.")

    assert good.date == datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert bad.date is None


def test_delivery_report_names_the_failed_recipient_and_original_message() -> None:
    parsed = parse_email(DSN)

    assert parsed.bounce is not None
    assert parsed.bounce.recipients == ("gone@example.org",)
    assert parsed.bounce.original_message_id == "<sent-17@example.test>"
    assert parsed.bounce.permanent


def test_delay_report_is_not_a_permanent_bounce() -> None:
    delayed = DSN.replace(b"Action: failed", b"Action: delayed").replace(
        b"Status: 5.1.1", b"Status: 4.4.1"
    )

    parsed = parse_email(delayed)

    assert parsed.bounce is not None
    assert not parsed.bounce.permanent


def test_report_with_only_the_original_headers_still_names_the_message() -> None:
    headers_only = DSN.replace(b"message/rfc822", b"text/rfc822-headers")

    parsed = parse_email(headers_only)

    assert parsed.bounce is not None
    assert parsed.bounce.original_message_id == "<sent-17@example.test>"


def test_attachments_are_read_with_a_safe_file_name() -> None:
    message = EmailMessage()
    message["From"] = "a@example.org"
    message.set_content("see attached")
    message.add_attachment(
        b"%PDF-1.4", maintype="application", subtype="pdf", filename="../../inv.pdf"
    )
    message.add_attachment(b"MZ", maintype="application", subtype="octet-stream")

    parsed = parse_email(message.as_bytes())

    assert [(a.filename, a.content_type, a.data) for a in parsed.attachments] == [
        ("inv.pdf", "application/pdf", b"%PDF-1.4"),
        ("part-3", "application/octet-stream", b"MZ"),
    ]
    assert parsed.text.strip() == "see attached"
