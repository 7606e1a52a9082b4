"""Messages between the stages: small, typed, carrying ids, never the mail.

Commands ask a stage to do something (imperative); events say what a stage
did (past tense) and are handled by the next stage.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FetchMailbox(Message):
    """Receive new mail of one account (sent by the scheduler)."""

    account_id: str


class EmailReceived(Message):
    """A message was stored; classify it."""

    email_id: int


class EmailClassified(Message):
    """Sender, thread and automatic-mail verdict are known; file the email."""

    email_id: int


class EmailFiled(Message):
    """Cases, leads and activities are done; reply and route as configured."""

    email_id: int


class SendEmail(Message):
    """Deliver outgoing emails of one account (stored, rendered, pending)."""

    email_ids: tuple[int, ...]
    # An operator's "process now": ignore the attempt limit and failed status.
    manual: bool = False


class ArchiveEmails(Message):
    """Flag as archived the given emails, or all old enough when none given."""

    email_ids: tuple[int, ...] = ()
