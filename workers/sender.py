"""Sender: deliver a chunk of outgoing emails over SMTP (see shared.delivery)."""

from __future__ import annotations

from shared.bus import stage_actor
from shared.delivery import deliver, deliver_chunk
from shared.messages import SendEmail


# Temporary failures are retried by shared.delivery, with the preferences'
# attempt limit; dramatiq's own retries only cover unexpected errors.
@stage_actor("sender", max_retries=3)
def sender(message: SendEmail) -> None:
    if message.manual:
        for email_id in message.email_ids:
            deliver(email_id, manual=True)
    else:
        deliver_chunk(message.email_ids)
