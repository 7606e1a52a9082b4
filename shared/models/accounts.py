"""System email accounts, the installation's preferences, and templates."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, Timestamped

PROTOCOLS = ("imap", "pop3", "none")
ENCRYPTIONS = ("ssl", "starttls", "none")
OUTGOING_AUTH = ("none", "incoming", "custom")
AFTER_RECEIVE = ("mark_read", "leave", "delete")
DELETE_PROCESSED = ("never", "always", "if_none_succeeded", "if_any_succeeded")
ARCHIVE_AFTER = (0, 3, 6, 9, 12)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Template(Timestamped, Base):
    __tablename__ = "templates"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    subject: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)


class Account(Timestamped, Base):
    """A shared mailbox used by the application, not by a person."""

    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint(_one_of("incoming_protocol", PROTOCOLS), name="protocol"),
        CheckConstraint(
            _one_of("incoming_encryption", ENCRYPTIONS), name="incoming_encryption"
        ),
        CheckConstraint(
            _one_of("outgoing_encryption", ENCRYPTIONS), name="outgoing_encryption"
        ),
        CheckConstraint(_one_of("outgoing_auth", OUTGOING_AUTH), name="auth"),
        CheckConstraint(_one_of("after_receive", AFTER_RECEIVE), name="after"),
        CheckConstraint(
            _one_of("delete_processed", DELETE_PROCESSED), name="delete_processed"
        ),
        CheckConstraint("batch_size >= 0", name="batch_size"),
        CheckConstraint(
            "incoming_protocol <> 'imap' OR root_folder IS NOT NULL",
            name="imap_root_folder",
        ),
    )

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    address: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    reply_address: Mapped[str | None] = mapped_column(String(320))
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    incoming_protocol: Mapped[str] = mapped_column(String(10), default="none")
    incoming_host: Mapped[str | None] = mapped_column(String(255))
    incoming_port: Mapped[int | None] = mapped_column(Integer)
    incoming_encryption: Mapped[str] = mapped_column(String(10), default="ssl")
    incoming_verify_tls: Mapped[bool] = mapped_column(Boolean, default=True)
    root_folder: Mapped[str | None] = mapped_column(String(255))
    incoming_username: Mapped[str | None] = mapped_column(String(320))
    incoming_password: Mapped[bytes | None] = mapped_column(LargeBinary)
    after_receive: Mapped[str] = mapped_column(String(20), default="mark_read")
    poll_interval: Mapped[int] = mapped_column(Integer, default=300)

    outgoing_host: Mapped[str | None] = mapped_column(String(255))
    outgoing_port: Mapped[int | None] = mapped_column(Integer)
    outgoing_encryption: Mapped[str] = mapped_column(String(10), default="starttls")
    outgoing_verify_tls: Mapped[bool] = mapped_column(Boolean, default=True)
    outgoing_auth: Mapped[str] = mapped_column(String(10), default="none")
    outgoing_username: Mapped[str | None] = mapped_column(String(320))
    outgoing_password: Mapped[bytes | None] = mapped_column(LargeBinary)
    validates_from: Mapped[bool] = mapped_column(Boolean, default=False)
    batch_size: Mapped[int] = mapped_column(Integer, default=0)
    # "30/min"; None sends as fast as the server takes it.
    rate_limit: Mapped[str | None] = mapped_column(String(20))
    # Seconds a connection or a command may take (60 to 600).
    timeout: Mapped[int] = mapped_column(Integer, default=60)

    attachments_allowed: Mapped[bool] = mapped_column(Boolean, default=True)
    attachment_types: Mapped[list[str]] = mapped_column(ARRAY(String(20)), default=list)
    attachment_max_bytes: Mapped[int | None] = mapped_column(BigInteger)

    processing_active: Mapped[bool] = mapped_column(Boolean, default=False)
    confirm_receipt_template_id: Mapped[str | None] = mapped_column(
        ForeignKey("templates.id")
    )
    create_case: Mapped[bool] = mapped_column(Boolean, default=False)
    attach_to_contact: Mapped[bool] = mapped_column(Boolean, default=False)
    create_lead: Mapped[bool] = mapped_column(Boolean, default=False)
    route_to_owner: Mapped[bool] = mapped_column(Boolean, default=False)
    reply_unassigned_template_id: Mapped[str | None] = mapped_column(
        ForeignKey("templates.id")
    )
    delete_processed: Mapped[str] = mapped_column(String(20), default="never")
    add_source_info: Mapped[bool] = mapped_column(Boolean, default=False)

    assignment_map_id: Mapped[str | None] = mapped_column(
        ForeignKey("assignment_maps.id")
    )
    default_owner_id: Mapped[str | None] = mapped_column(ForeignKey("employees.id"))
    default_workgroup: Mapped[str | None] = mapped_column(String(100))


class Preferences(Timestamped, Base):
    """The installation's email preferences: exactly one row, id 1."""

    __tablename__ = "preferences"
    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint(
            "archive_after_months IS NULL OR archive_after_months IN (0,3,6,9,12)",
            name="archive_after",
        ),
        CheckConstraint("resend_attempts >= 0", name="resend_attempts"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    default_account_id: Mapped[str | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL")
    )
    archive_after_months: Mapped[int | None] = mapped_column(Integer)
    resend_attempts: Mapped[int] = mapped_column(Integer, default=0)
    password_changed_template_id: Mapped[str | None] = mapped_column(
        ForeignKey("templates.id")
    )
    tag_prefix: Mapped[str] = mapped_column(String(20), default="[")
    tag_suffix: Mapped[str] = mapped_column(String(20), default="]")
    suspended: Mapped[bool] = mapped_column(Boolean, default=False)


class MailboxPoll(Base):
    """When the scheduler next receives mail for an account."""

    __tablename__ = "mailbox_polls"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    next_poll_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_polled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MailboxFolder(Base):
    """IMAP sync state of one folder: where the last fetch stopped."""

    __tablename__ = "mailbox_folders"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    folder: Mapped[str] = mapped_column(String(255), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)


class Pop3Uidl(Base):
    """A POP3 message already received, by its server-side unique id."""

    __tablename__ = "pop3_uidls"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    uidl: Mapped[str] = mapped_column(String(255), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ScheduledJob(Base):
    """Last run of a periodic job of the scheduler (the daily archive)."""

    __tablename__ = "scheduled_jobs"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    next_run_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
