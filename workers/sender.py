"""Sender: deliver one outgoing email over SMTP (see shared.delivery)."""

from __future__ import annotations

from shared.bus import stage_actor
from shared.delivery import deliver
from shared.messages import SendEmail


# Temporary failures are retried by shared.delivery, with the preferences'
# attempt limit; dramatiq's own retries only cover unexpected errors.
@stage_actor("sender", max_retries=3)
def sender(message: SendEmail) -> None:
    deliver(message.email_id, manual=message.manual)
