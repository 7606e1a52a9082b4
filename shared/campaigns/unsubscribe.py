"""Unsubscribing from mass email: the headers, and the signed one-click link.

The link's token names the contact and the campaign and carries an HMAC of
them under SYSMAIL_SECRET_KEY, so nobody can opt someone else out.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from sqlalchemy.orm import Session

from config.settings import get_settings
from shared.campaigns.common import CampaignError
from shared.errors import ConfigError, NotFound
from shared.models import Account, Contact

log = logging.getLogger(__name__)

UNSUBSCRIBE_SUBJECT = "unsubscribe"


def bulk_headers(account: Account, campaign_id: str, contact_id: str) -> dict[str, str]:
    """List-Unsubscribe (RFC 2369, one-click per RFC 8058) and Precedence.

    Kept plain ASCII so that the header is never folded into encoded-words.
    """
    targets = [f"<mailto:{account.address}?subject={UNSUBSCRIBE_SUBJECT}>"]
    base = get_settings().unsubscribe_url
    if base:
        token = unsubscribe_token(campaign_id, contact_id)
        separator = "&" if "?" in base else "?"
        targets.append(f"<{base}{separator}token={token}>")
    return {
        "List-Unsubscribe": ", ".join(targets),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Precedence": "bulk",
    }


def _signature(payload: str) -> str:
    secret = get_settings().secret_key
    if secret is None or not secret.get_secret_value():
        raise ConfigError("SYSMAIL_SECRET_KEY is not set; it signs unsubscribe links")
    digest = hmac.new(
        secret.get_secret_value().encode(), payload.encode(), hashlib.sha256
    )
    return digest.hexdigest()[:32]


def unsubscribe_token(campaign_id: str, contact_id: str) -> str:
    """A token naming a contact, signed so that no one can forge another's."""
    payload = f"{contact_id}|{campaign_id}".encode().hex()
    return f"{payload}.{_signature(payload)}"


def unsubscribe(session: Session, token: str) -> Contact:
    """Opt the contact a token names out of mass email (one-click POST)."""
    payload, _, signature = token.partition(".")
    if not hmac.compare_digest(signature, _signature(payload)):
        raise CampaignError("the unsubscribe link is not valid")
    try:
        contact_id, _, campaign_id = bytes.fromhex(payload).decode().partition("|")
    except ValueError as exc:
        raise CampaignError("the unsubscribe link is not valid") from exc
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise NotFound(f"contact {contact_id} does not exist")
    contact.opted_out = True
    log.info("contact=%s opted out through campaign=%s", contact_id, campaign_id)
    return contact
