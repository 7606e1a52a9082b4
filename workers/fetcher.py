"""Fetcher: receive an account's new mail and hand each email on."""

from __future__ import annotations

import logging
import threading

from shared.bus import stage_actor
from shared.errors import DeliveryError
from shared.inbound.fetch import fetch_mailbox
from shared.messages import FetchMailbox

log = logging.getLogger(__name__)

# Accounts whose server failed on the last try: said once, not every poll.
_down: set[str] = set()
_down_lock = threading.Lock()


# No retries: the scheduler asks again at the account's next poll.
@stage_actor("fetcher", max_retries=0)
def fetcher(message: FetchMailbox) -> None:
    try:
        fetch_mailbox(message.account_id)
    except DeliveryError as exc:
        _report_down(message.account_id, exc)
        return
    _report_up(message.account_id)


def _report_down(account_id: str, exc: DeliveryError) -> None:
    with _down_lock:
        first = account_id not in _down
        _down.add(account_id)
    if first:
        log.warning("account=%s mailbox not fetched: %s", account_id, exc)
    else:
        log.debug("account=%s mailbox still not fetched: %s", account_id, exc)


def _report_up(account_id: str) -> None:
    with _down_lock:
        was_down = account_id in _down
        _down.discard(account_id)
    if was_down:
        log.info("account=%s mailbox reachable again", account_id)
