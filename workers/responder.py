"""Responder: confirm receipt, answer unassigned mail, forward to the owner."""

from __future__ import annotations

from shared.bus import stage_actor
from shared.inbound.cleanup import delete_from_server
from shared.inbound.respond import respond_to_email
from shared.messages import EmailFiled
from shared.outbox import release


@stage_actor("responder")
def responder(message: EmailFiled) -> None:
    response = respond_to_email(message.email_id)
    release(response.queued)
    if response.delete_from_server:
        delete_from_server(message.email_id)
