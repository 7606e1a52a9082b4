"""Outgoing MIME messages: headers that cannot be injected or mangled.

Two builders give the same message. ``compose`` uses the email package and
handles everything, attachments included. ``build_raw`` writes the common
case (text, optional HTML, no files) directly as bytes, some hundred times
cheaper (25 us against 3 ms), which matters when a campaign builds
thousands at queue time; it hands anything else to ``compose``. The unit
tests parse the output of both with ``policy.default`` and check that they
agree.

Every header value is checked for CR and LF before it is set, so a name or a
subject can never add a header of its own. Message-ID, In-Reply-To,
References and the List-Unsubscribe pair are set as raw ASCII text: the
email package would otherwise fold a long URL into encoded-words, which mail
clients then fail to read as a link.
"""

from __future__ import annotations

import mimetypes
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import policy, quoprimime
from email.header import Header
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


# -- the cheap builder for the common case ----------------------------------

_LINE = 78
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDR = re.compile(rf"^{_ATOM}(\.{_ATOM})*@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")
_PLAIN_NAME = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+( [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$"
)


def build_raw(c: Composition) -> bytes:
    """The message as it goes over SMTP; the same as ``to_bytes(compose(c))``
    once parsed, built without the email package when there are no files."""
    if c.attachments:
        return to_bytes(compose(c))
    if not c.to:
        raise InvalidHeader("an email needs at least one recipient")
    lines = [_fold("From", _mailbox("From", c.from_name, c.from_address))]
    lines.append(_fold("To", ", ".join(_mailbox("To", "", to) for to in c.to)))
    if c.reply_to:
        lines.append(_fold("Reply-To", _mailbox("Reply-To", "", c.reply_to)))
    lines.append(_unstructured("Subject", check_value("Subject", c.subject).strip()))
    if c.date is not None:
        lines.append(f"Date: {format_datetime(c.date)}")
    lines.append("Message-ID: " + _id_list("Message-ID", c.message_id))
    if c.in_reply_to:
        lines.append("In-Reply-To: " + _id_list("In-Reply-To", c.in_reply_to))
    if c.references:
        lines.append("References: " + _id_list("References", c.references))
    if c.automatic:
        lines.append("Auto-Submitted: auto-replied")
        lines.append("X-Auto-Response-Suppress: All")
    seen: dict[str, int] = {}
    for name, value in c.headers.items():
        # A later value of the same name replaces the earlier, as in compose.
        line = _extra_line(name, value)
        key = name.lower()
        if key in seen:
            lines[seen[key]] = line
        else:
            seen[key] = len(lines)
            lines.append(line)
    lines.append("MIME-Version: 1.0")

    text_part = _text_part("plain", c.text)
    if c.html is None:
        head = "\r\n".join(lines) + "\r\n"
        return (head + text_part).encode("ascii")
    html_part = _text_part("html", c.html)
    boundary = _boundary(text_part, html_part)
    lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    # The line break before a delimiter belongs to the delimiter.
    body = (
        f"\r\n--{boundary}\r\n{text_part}"
        f"\r\n--{boundary}\r\n{html_part}\r\n--{boundary}--\r\n"
    )
    return ("\r\n".join(lines) + "\r\n" + body).encode("ascii")


def _mailbox(name: str, display_name: str, addr_spec: str) -> str:
    check_value(name, display_name)
    check_value(name, addr_spec)
    if _PLAIN_ADDR.match(addr_spec) and (
        not display_name or _PLAIN_NAME.match(display_name)
    ):
        # The usual case, valid as it stands; the parser costs 150 us each.
        if not display_name:
            return addr_spec
        return f"{display_name} <{addr_spec}>"
    address = _address(name, display_name, addr_spec)
    if not address.addr_spec.isascii():
        raise InvalidHeader(f"{name} address {addr_spec!r} is not plain ASCII")
    if not display_name:
        return address.addr_spec
    if display_name.isascii():
        return str(address)
    encoded = Header(display_name, "utf-8").encode()
    return f"{encoded} <{address.addr_spec}>"


def _fold(name: str, value: str) -> str:
    """Address lists folded after a comma, never inside an address."""
    line = f"{name}: {value}"
    if len(line) <= _LINE:
        return line
    return line.replace(", ", ",\r\n ")


def _unstructured(name: str, value: str) -> str:
    line = f"{name}: {value}"
    if not value.isascii():
        header = Header(value, "utf-8", header_name=name)
        return f"{name}: " + header.encode(linesep="\r\n", maxlinelen=_LINE)
    if len(line) <= _LINE:
        return line
    # Folded before a space, which unfolding gives back; a word longer
    # than a line stays whole.
    folded: list[str] = []
    width = 0
    for n, word in enumerate(line.split(" ")):
        if n > 1 and width + 1 + len(word) > _LINE:
            folded.append("\r\n ")
            width = 1 + len(word)
        else:
            if folded:
                folded.append(" ")
            width += len(word) + (1 if folded else 0)
        folded.append(word)
    return "".join(folded)


def _extra_line(name: str, value: str) -> str:
    if not _HEADER_NAME.match(name):
        raise InvalidHeader(f"{name!r} is not a header name")
    if name.lower() in OWN_HEADERS:
        raise InvalidHeader(f"header {name} is set by sysmail itself")
    if name.lower() in RAW_HEADERS:
        return f"{name}: {_raw_value(name, value)}"
    return _unstructured(name, check_value(name, value).strip())


def _text_part(subtype: str, content: str) -> str:
    """Headers and body of one text part: 7bit when it can be, else
    quoted-printable, as the email package chooses for text like this."""
    lines = content.splitlines() or [""]
    if content.isascii() and all(len(line) <= _LINE for line in lines):
        cte, body = "7bit", "".join(line + "\r\n" for line in lines)
    else:
        joined = "\n".join(lines) + "\n"
        latin = joined.encode("utf-8").decode("latin-1")
        body = quoprimime.body_encode(latin, maxlinelen=_LINE - 2, eol="\r\n")
        if not body.endswith("\r\n"):
            body += "\r\n"
        cte = "quoted-printable"
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {cte}\r\n\r\n{body}"
    )


def _boundary(*parts: str) -> str:
    while True:
        boundary = "=_" + secrets.token_hex(12)
        if not any(boundary in part for part in parts):
            return boundary
