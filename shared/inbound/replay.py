"""Putting a saved message (an .eml file) through incoming processing.

For developers and operators: the message is stored as if the account had
just received it, then handed to the classifier like fetched mail.
"""

from __future__ import annotations

import logging

from shared.db import session_scope
from shared.errors import NotFound
from shared.inbound.fetch import Announce, publish_received
from shared.inbound.store import store_received
from shared.models import Account

log = logging.getLogger(__name__)


def replay_message(
    account_id: str, raw: bytes, announce: Announce = publish_received
) -> int | None:
    """Store raw as received by the account and announce it; its email id.

    None when the account already holds a message with the same Message-ID.
    """
    with session_scope() as session:
        account = session.get(Account, account_id)
        if account is None:
            raise NotFound(f"account {account_id} does not exist")
        email_id = store_received(session, account, raw, folder="replay", uid="")
    if email_id is not None:
        announce(email_id)
        log.info("email=%s account=%s replayed", email_id, account_id)
    return email_id
