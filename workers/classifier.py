"""Classifier: parse a received email, find its conversation and sender."""

from __future__ import annotations

from shared.bus import publish, stage_actor
from shared.inbound.classify import classify_email
from shared.messages import EmailClassified, EmailReceived


@stage_actor("classifier")
def classifier(message: EmailReceived) -> None:
    if classify_email(message.email_id):
        publish(EmailClassified(email_id=message.email_id))
