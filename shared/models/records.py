"""What incoming mail creates: cases, leads, activities; and campaigns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, Timestamped


class Case(Timestamped, Base):
    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="open")
    account_id: Mapped[str | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL")
    )
    contact_id: Mapped[str | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL")
    )
    business_account_id: Mapped[str | None] = mapped_column(
        ForeignKey("business_accounts.id", ondelete="SET NULL")
    )
    owner_id: Mapped[str | None] = mapped_column(
        ForeignKey("employees.id", ondelete="SET NULL")
    )
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Lead(Timestamped, Base):
    __tablename__ = "leads"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(20), default="new")
    account_id: Mapped[str | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL")
    )
    owner_id: Mapped[str | None] = mapped_column(
        ForeignKey("employees.id", ondelete="SET NULL")
    )


class Campaign(Timestamped, Base):
    """A mass email: one template rendered for many recipients."""

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    template_id: Mapped[str] = mapped_column(ForeignKey("templates.id"))
    # draft -> queued (emails created) -> sent (every email left the queue)
    status: Mapped[str] = mapped_column(String(20), default="draft")
    # How the recipients were chosen, kept to build the emails on send.
    audience: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    # Recipients left out, by reason: opted_out, bounced, no_address, duplicate.
    skipped: Mapped[dict[str, int]] = mapped_column(JSONB, default=dict)
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Activity(Timestamped, Base):
    """An email filed on a record: a contact, business account, case or lead."""

    __tablename__ = "activities"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), default="email")
    summary: Mapped[str] = mapped_column(Text, default="")
    email_id: Mapped[int | None] = mapped_column(
        ForeignKey("emails.id", ondelete="CASCADE"), index=True
    )
    contact_id: Mapped[str | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    business_account_id: Mapped[str | None] = mapped_column(
        ForeignKey("business_accounts.id", ondelete="CASCADE")
    )
    case_id: Mapped[int | None] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), index=True
    )
    lead_id: Mapped[int | None] = mapped_column(
        ForeignKey("leads.id", ondelete="CASCADE")
    )
    campaign_id: Mapped[str | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE")
    )
