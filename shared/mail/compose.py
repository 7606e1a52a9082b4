"""Outgoing MIME messages: headers that cannot be injected or mangled.

Every header value is checked for CR and LF before it is set, so a name or a
subject can never add a header of its own. Message-ID, In-Reply-To,
References and the List-Unsubscribe pair are set as raw ASCII text: the
email package would otherwise fold a long URL into encoded-words, which mail
clients then fail to read as a link.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from shared.errors import SysmailError

# Folding of ordinary headers stays on; raw headers set below are kept as set.
# Bodies are 7-bit (quoted-printable or base64), so no server needs 8BITMIME.
POLICY = policy.SMTP.clone(refold_source="none", cte_type="7bit")

# Kept verbatim: RFC 8058 needs List-Unsubscribe readable as plain ASCII.
RAW_HEADERS = frozenset(
    {
        "message-id",
        "in-reply-to",
        "references",
        "list-unsubscribe",
        "list-unsubscribe-post",
    }
)
# Set from the email itself; extra headers may not replace them.
OWN_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "sender",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
) | RAW_HEADERS - {"list-unsubscribe", "list-unsubscribe-post"}

_HEADER_NAME = re.compile(r"^[!-9;-~]+$")
_MSG_ID = re.compile(r"<[^<>\s]+>")


class InvalidHeader(SysmailError):
    """A header name or value would break the message (CR, LF, non-ASCII)."""


@dataclass(frozen=True)
class Composition:
    """Everything one outgoing message is made of."""

    message_id: str
    from_address: str
    to: Sequence[str]
    subject: str
    text: str
    from_name: str = ""
    reply_to: str | None = None
    html: str | None = None
    date: datetime | None = None
    in_reply_to: str | None = None
    references: str | None = None
    automatic: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    # (filename, content type, data)
    attachments: Sequence[tuple[str, str, bytes]] = ()


def check_value(name: str, value: str) -> str:
    """Return a header value, refusing one that would start another header."""
    if "\r" in value or "\n" in value:
        raise InvalidHeader(f"header {name} contains a line break")
    return value


def _raw_value(name: str, value: str) -> str:
    check_value(name, value)
    if not value.isascii():
        raise InvalidHeader(f"header {name} must be plain ASCII")
    return value.strip()


def _id_list(name: str, value: str) -> str:
    """Message ids, one per folded line, so a long thread never grows a line
    past the limit."""
    ids = _MSG_ID.findall(_raw_value(name, value))
    if not ids:
        raise InvalidHeader(f"header {name} holds no message id")
    return "\r\n ".join(ids)


def _address(name: str, display_name: str, addr_spec: str) -> Address:
    check_value(name, display_name)
    check_value(name, addr_spec)
    try:
        return Address(display_name=display_name, addr_spec=addr_spec)
    except (ValueError, IndexError) as exc:
        raise InvalidHeader(f"{name} address {addr_spec!r} is not valid") from exc


def compose(c: Composition) -> EmailMessage:
    """Build the message; raises InvalidHeader for any unsafe header."""
    if not c.to:
        raise InvalidHeader("an email needs at least one recipient")
    msg = EmailMessage(policy=POLICY)
    msg["From"] = _address("From", c.from_name, c.from_address)
    msg["To"] = [_address("To", "", to) for to in c.to]
    if c.reply_to:
        msg["Reply-To"] = _address("Reply-To", "", c.reply_to)
    msg["Subject"] = check_value("Subject", c.subject).strip()
    if c.date is not None:
        msg["Date"] = format_datetime(c.date)
    msg.set_raw("Message-ID", _id_list("Message-ID", c.message_id))
    if c.in_reply_to:
        msg.set_raw("In-Reply-To", _id_list("In-Reply-To", c.in_reply_to))
    if c.references:
        msg.set_raw("References", _id_list("References", c.references))
    if c.automatic:
        # RFC 3834, and Exchange's own switch against out-of-office loops.
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
    for name, value in c.headers.items():
        _add_extra(msg, name, value)

    msg.set_content(c.text)
    if c.html is not None:
        msg.add_alternative(c.html, subtype="html")
    for filename, content_type, data in c.attachments:
        check_value("attachment filename", filename)
        maintype, _, subtype = content_type.partition("/")
        msg.add_attachment(
            data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=filename,
        )
    return msg


def _add_extra(msg: EmailMessage, name: str, value: str) -> None:
    if not _HEADER_NAME.match(name):
        raise InvalidHeader(f"{name!r} is not a header name")
    if name.lower() in OWN_HEADERS:
        raise InvalidHeader(f"header {name} is set by sysmail itself")
    del msg[name]
    if name.lower() in RAW_HEADERS:
        msg.set_raw(name, _raw_value(name, value))
    else:
        msg[name] = check_value(name, value)


def to_bytes(msg: EmailMessage) -> bytes:
    """The message as it goes over SMTP (CRLF line ends)."""
    return msg.as_bytes(policy=POLICY)


def guess_type(filename: str) -> str:
    content_type, _ = mimetypes.guess_type(filename)
    return content_type or "application/octet-stream"
