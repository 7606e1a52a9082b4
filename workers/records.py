"""Records: file a classified email on its case, lead, contact and campaign."""

from __future__ import annotations

from shared.bus import publish, stage_actor
from shared.inbound.filing import file_email
from shared.messages import EmailClassified, EmailFiled


@stage_actor("records")
def records(message: EmailClassified) -> None:
    if file_email(message.email_id):
        publish(EmailFiled(email_id=message.email_id))
