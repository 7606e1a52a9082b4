"""Emails in both directions, their status history and processing trace."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, Timestamped

STATUSES = (
    "draft",
    "pending_processing",
    "in_process",
    "processed",
    "failed",
    "canceled",
)
# What an outgoing email is: decides headers (bulk, automatic) and tracking.
KINDS = ("single", "campaign", "receipt", "reply", "forward", "notification", "test")


class Email(Timestamped, Base):
    __tablename__ = "emails"
    __table_args__ = (
        CheckConstraint("direction IN ('in','out')", name="direction"),
        CheckConstraint(
            "status IN ('draft','pending_processing','in_process','processed',"
            "'failed','canceled')",
            name="status",
        ),
        # The same message received twice by one account is stored once.
        Index(
            "uq_emails_incoming_message_id",
            "account_id",
            "message_id",
            unique=True,
            postgresql_where=text("direction = 'in' AND message_id IS NOT NULL"),
        ),
        Index("ix_emails_message_id", "message_id"),
        # No index may hold (or filter on) a column that the sender's claim
        # and record change (status, attempts, claimed_at, sent_at, ...):
        # then those updates are HOT, rewriting no index entry. Due mail is
        # found through OutboxEntry instead.
        Index("ix_emails_campaign", "campaign_id"),
        Index("ix_emails_to_lower", func.lower(text("to_address"))),
        # Room on each page for the new versions of those HOT updates.
        {"postgresql_with": {"fillfactor": 75}},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account_id: Mapped[str | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL"), index=True
    )
    direction: Mapped[str] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(String(20), default="single")
    status: Mapped[str] = mapped_column(String(20), default="pending_processing")
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)

    message_id: Mapped[str | None] = mapped_column(String(998))
    in_reply_to: Mapped[str | None] = mapped_column(Text)
    references: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text, default="")
    from_address: Mapped[str | None] = mapped_column(String(320))
    from_name: Mapped[str | None] = mapped_column(String(200))
    # The first recipient; all of them are in to_addresses.
    to_address: Mapped[str | None] = mapped_column(String(320))
    to_addresses: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    cc_addresses: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    reply_to: Mapped[str | None] = mapped_column(String(320))
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    # The message as received, or as sent (built before the first attempt).
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)

    # Outgoing: who asked, when it may go, where it is.
    sent_by_user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    bounced: Mapped[bool] = mapped_column(Boolean, default=False)

    # Incoming: what the classifier found.
    is_automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    automatic_reason: Mapped[str | None] = mapped_column(String(200))
    # Where it came from on the server, to mark or delete it there later.
    server_folder: Mapped[str | None] = mapped_column(String(255))
    server_uid: Mapped[str | None] = mapped_column(String(255))

    # What the email belongs to.
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("emails.id", ondelete="SET NULL"), index=True
    )
    campaign_id: Mapped[str | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="SET NULL")
    )
    contact_id: Mapped[str | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL")
    )
    business_account_id: Mapped[str | None] = mapped_column(
        ForeignKey("business_accounts.id", ondelete="SET NULL")
    )
    employee_id: Mapped[str | None] = mapped_column(
        ForeignKey("employees.id", ondelete="SET NULL")
    )
    case_id: Mapped[int | None] = mapped_column(
        ForeignKey("cases.id", ondelete="SET NULL")
    )
    lead_id: Mapped[int | None] = mapped_column(
        ForeignKey("leads.id", ondelete="SET NULL")
    )
    owner_id: Mapped[str | None] = mapped_column(
        ForeignKey("employees.id", ondelete="SET NULL")
    )
    # Extra headers of an outgoing email (List-Unsubscribe and the like).
    headers: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    # Values a template was rendered with, kept to render it again if needed.
    context: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


class OutboxEntry(Base):
    """An outgoing email not finished yet: pending, or claimed by a sender.

    The scheduler finds due and stale mail here, a table as small as the
    mail in flight, rather than through an index on ``emails.status`` that
    would cost every claim and record an index rewrite. A row is added
    whenever an email becomes pending and removed by the scheduler once the
    email is processed, failed or canceled, off the sender's path.
    """

    __tablename__ = "outbox"

    email_id: Mapped[int] = mapped_column(
        ForeignKey("emails.id", ondelete="CASCADE"), primary_key=True
    )


class EmailStatusChange(Base):
    """One step of an email's status history, with the reason and reply."""

    __tablename__ = "email_status_changes"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    email_id: Mapped[int] = mapped_column(
        ForeignKey("emails.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    smtp_code: Mapped[int | None] = mapped_column(Integer)
    server_reply: Mapped[str | None] = mapped_column(Text)


class EmailTrace(Base):
    """What a stage decided about an email, and why."""

    __tablename__ = "email_traces"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    email_id: Mapped[int] = mapped_column(
        ForeignKey("emails.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    stage: Mapped[str] = mapped_column(String(20))
    decision: Mapped[str] = mapped_column(String(100))
    detail: Mapped[str] = mapped_column(Text, default="")


class Attachment(Base):
    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    email_id: Mapped[int] = mapped_column(
        ForeignKey("emails.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Not delivered or kept, and why (type not allowed, too large).
    dropped_reason: Mapped[str | None] = mapped_column(String(200))
