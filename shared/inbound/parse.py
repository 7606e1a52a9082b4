"""Reading a received message, whatever shape it arrives in.

Mail from the outside world is often broken: unknown charsets, headers that
are not valid RFC 5322, MIME that never closes. Every reader here degrades to
an empty or approximate value instead of raising, so one bad message never
stops a mailbox.
"""

from __future__ import annotations

import email
import email.utils
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message

log = logging.getLogger(__name__)

_MESSAGE_IDS = re.compile(r"<[^<>\s]+>")
# Header values longer than this are cut: they only feed columns and traces.
_MAX_HEADER = 2000


@dataclass(frozen=True)
class Bounce:
    """What a delivery status notification says about the failed message."""

    recipients: tuple[str, ...]
    original_message_id: str | None
    permanent: bool


@dataclass(frozen=True)
class ParsedAttachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class ParsedEmail:
    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    from_address: str | None
    from_name: str | None
    to_addresses: tuple[str, ...]
    cc_addresses: tuple[str, ...]
    reply_to: str | None
    date: datetime | None
    content_type: str
    # Lower-cased header names to their decoded values, first occurrence.
    headers: dict[str, str] = field(default_factory=dict)
    return_path: str | None = None
    text: str = ""
    html: str | None = None
    bounce: Bounce | None = None
    attachments: tuple[ParsedAttachment, ...] = ()
    defects: tuple[str, ...] = ()


def parse_email(raw: bytes) -> ParsedEmail:
    """Everything sysmail needs from a raw message; never raises on bad mail."""
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    headers = _headers(message)

    from_name, from_address = _first_address(headers.get("from", ""))
    _, reply_to = _first_address(headers.get("reply-to", ""))
    return_path = None
    if "return-path" in headers:
        return_path = headers["return-path"].strip().strip("<>").strip()

    text, html = _bodies(message)
    attachments = tuple(_attachments(message))
    return ParsedEmail(
        message_id=_first_id(headers.get("message-id", "")),
        in_reply_to=tuple(_ids(headers.get("in-reply-to", ""))),
        references=tuple(_ids(headers.get("references", ""))),
        subject=_one_line(headers.get("subject", "")),
        from_address=from_address,
        from_name=from_name,
        to_addresses=_addresses(headers.get("to", "")),
        cc_addresses=_addresses(headers.get("cc", "")),
        reply_to=reply_to,
        date=_date(headers.get("date", "")),
        content_type=_content_type(message),
        headers=headers,
        return_path=return_path,
        text=text,
        html=html,
        bounce=_bounce(message),
        attachments=attachments,
        defects=tuple(type(d).__name__ for d in message.defects),
    )


def message_ids(value: str) -> list[str]:
    """The <id> tokens of an In-Reply-To or References value, in order."""
    return _ids(value)


def _headers(message: Message) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in message:
        key = name.lower()
        if key not in found:
            found[key] = _header_value(message, name)[:_MAX_HEADER]
    return found


def _header_value(message: Message, name: str) -> str:
    # The default policy decodes encoded words; on a header it cannot parse
    # it may raise, and then the raw value is better than nothing.
    try:
        return str(message.get(name, ""))
    except Exception:  # any parser bug must not drop the mail
        for key, value in message.raw_items():
            if key.lower() == name.lower():
                return str(value)
        return ""


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _first_address(value: str) -> tuple[str | None, str | None]:
    pairs = _address_pairs(value)
    if not pairs:
        return None, None
    name, address = pairs[0]
    return (name or None), address


def _addresses(value: str) -> tuple[str, ...]:
    return tuple(address for _, address in _address_pairs(value))


def _address_pairs(value: str) -> list[tuple[str, str]]:
    if not value.strip():
        return []
    try:
        pairs = email.utils.getaddresses([value])
    except Exception:
        return []
    return [
        (_one_line(name), address.strip()) for name, address in pairs if "@" in address
    ]


def _ids(value: str) -> list[str]:
    return _MESSAGE_IDS.findall(value)


def _first_id(value: str) -> str | None:
    ids = _ids(value)
    if ids:
        return ids[0]
    # Some mailers omit the angle brackets; keep the bare token then.
    token = value.strip()
    if token and " " not in token and "@" in token:
        return f"<{token}>"
    return None


def _date(value: str) -> datetime | None:
    if not value.strip():
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _content_type(message: Message) -> str:
    try:
        return message.get_content_type()
    except Exception:
        return "text/plain"


def _bodies(message: EmailMessage) -> tuple[str, str | None]:
    text = ""
    html: str | None = None
    for part in _walk(message):
        if part.is_multipart() or _is_attachment(part):
            continue
        kind = _content_type(part)
        if kind == "text/plain" and not text:
            text = _decoded(part)
        elif kind == "text/html" and html is None:
            html = _decoded(part)
    return text, html


def _walk(message: Message) -> list[Message]:
    try:
        return list(message.walk())
    except Exception:
        return [message]


def _is_attachment(part: Message) -> bool:
    try:
        return part.get_content_disposition() == "attachment"
    except Exception:
        return False


def _attachments(message: Message) -> list[ParsedAttachment]:
    """Parts with a file name or marked as attachment, report parts aside."""
    found = []
    for number, part in enumerate(_walk(message)):
        if part.is_multipart():
            continue
        kind = _content_type(part)
        filename = _filename(part)
        if not filename and not _is_attachment(part):
            continue
        if kind.startswith("message/") or kind == "text/rfc822-headers":
            continue
        try:
            data = part.get_payload(decode=True)
        except Exception:
            data = None
        if not isinstance(data, bytes):
            continue
        found.append(ParsedAttachment(filename or f"part-{number}", kind, data))
    return found


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        return None
    if not name:
        return None
    # Only the last path element: a name like ../../x must not become a path.
    return name.replace("\\", "/").rpartition("/")[2].strip() or None


def _decoded(part: Message) -> str:
    """A text part as str, whatever its charset claims to be."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = _charset(part)
    for candidate in (charset, "utf-8"):
        if candidate is None:
            continue
        try:
            return payload.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    # Latin-1 maps every byte, so the text is at worst garbled, never lost.
    return payload.decode("latin-1")


def _charset(part: Message) -> str | None:
    try:
        charset = part.get_content_charset()
    except Exception:
        return None
    return charset if isinstance(charset, str) else None


def _bounce(message: Message) -> Bounce | None:
    """The failed recipients and message of a multipart/report DSN."""
    if _content_type(message) != "multipart/report":
        return None
    recipients: list[str] = []
    original: str | None = None
    permanent = False
    for part in _walk(message):
        kind = _content_type(part)
        if kind == "message/delivery-status":
            fields = _status_fields(part)
            recipients.extend(_recipients(fields))
            permanent = (
                permanent
                or any(
                    value.strip().startswith("5")
                    for name, value in fields
                    if name == "status"
                )
                or any(
                    value.strip().lower() == "failed"
                    for name, value in fields
                    if name == "action"
                )
            )
        elif kind in ("message/rfc822", "text/rfc822-headers") and original is None:
            original = _original_message_id(part)
    return Bounce(tuple(dict.fromkeys(recipients)), original, permanent)


def _status_fields(part: Message) -> list[tuple[str, str]]:
    # The delivery-status body is a series of header blocks; reading it as
    # text is more forgiving than the parser's own handling of it.
    text = _raw_body(part)
    fields: list[tuple[str, str]] = []
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and not name.startswith((" ", "\t")):
            fields.append((name.strip().lower(), value.strip()))
    return fields


def _raw_body(part: Message) -> str:
    try:
        payload = part.get_payload()
    except Exception:
        return ""
    if isinstance(payload, str):
        return payload
    if isinstance(payload, list):
        # The parser split the status blocks into sub-messages.
        blocks: list[str] = []
        for block in payload:
            if isinstance(block, Message):
                blocks.extend(f"{k}: {v}" for k, v in block.raw_items())
        return "\n".join(blocks)
    return ""


def _recipients(fields: list[tuple[str, str]]) -> list[str]:
    found = []
    for name, value in fields:
        if name in ("final-recipient", "original-recipient"):
            _, _, address = value.partition(";")
            address = address.strip().strip("<>")
            if "@" in address:
                found.append(address)
    return found


def _original_message_id(part: Message) -> str | None:
    if part.get_content_type() == "message/rfc822":
        try:
            inner = part.get_payload()
        except Exception:
            return None
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            return _first_id(_header_value(inner[0], "Message-ID"))
        return None
    match = re.search(
        r"^message-id:\s*(.+)$", _raw_body(part), re.IGNORECASE | re.MULTILINE
    )
    return _first_id(match.group(1)) if match else None
