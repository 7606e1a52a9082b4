"""Which mail a machine sent: never answered, never turned into records.

Answering automatic mail is how two robots end up mailing each other
forever, so the test is deliberately broad: one sign is enough.
"""

from __future__ import annotations

from collections.abc import Collection

from shared.inbound.parse import ParsedEmail

_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
# Local parts of addresses that belong to mail systems, not to people.
_ROBOT_LOCAL_PARTS = frozenset(
    {
        "mailer-daemon",
        "postmaster",
        "noreply",
        "no-reply",
        "no_reply",
        "donotreply",
        "do-not-reply",
        "do_not_reply",
        "bounce",
        "bounces",
        "daemon",
    }
)


def automatic_reason(parsed: ParsedEmail, own_addresses: Collection[str]) -> str | None:
    """Why the message is automatic mail, or None when a person sent it.

    own_addresses are the system's own account addresses, lower-cased.
    """
    headers = parsed.headers

    auto_submitted = headers.get("auto-submitted", "").strip().lower()
    if auto_submitted and auto_submitted.split(";")[0].strip() != "no":
        return f"Auto-Submitted: {auto_submitted}"
    precedence = headers.get("precedence", "").strip().lower()
    if precedence in _BULK_PRECEDENCE:
        return f"Precedence: {precedence}"
    for name in ("x-auto-response-suppress", "x-autoreply", "x-autorespond"):
        if name in headers:
            return f"{_title(name)} present"
    for name in ("list-id", "list-unsubscribe"):
        if name in headers:
            return f"{_title(name)} present (list mail)"
    if parsed.return_path is not None and not parsed.return_path:
        return "empty Return-Path (bounce)"
    if parsed.content_type == "multipart/report":
        return "multipart/report (delivery or read report)"

    sender = (parsed.from_address or "").lower()
    if not sender:
        return None
    if sender in own_addresses:
        return f"sent by the system's own address {sender}"
    local_part = sender.partition("@")[0]
    if local_part in _ROBOT_LOCAL_PARTS or local_part.startswith("noreply"):
        return f"sender {sender} is a mail system address"
    return None


def _title(header: str) -> str:
    return "-".join(word.capitalize() for word in header.split("-"))
