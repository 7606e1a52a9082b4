"""Who mail is about: employees, users, contacts, business accounts, routing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shared.models.base import Base, Timestamped

RULE_FIELDS = ("from_address", "from_domain", "to_address", "subject_contains")


class Employee(Timestamped, Base):
    __tablename__ = "employees"
    __table_args__ = (Index("ix_employees_email_lower", func.lower(text("email"))),)

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class User(Timestamped, Base):
    """A person who sends mail through sysmail; may pick a default account."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200), default="")
    default_account_id: Mapped[str | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL")
    )


class BusinessAccount(Timestamped, Base):
    __tablename__ = "business_accounts"
    __table_args__ = (
        Index("ix_business_accounts_email_lower", func.lower(text("email"))),
    )

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))


class Contact(Timestamped, Base):
    __tablename__ = "contacts"
    __table_args__ = (Index("ix_contacts_email_lower", func.lower(text("email"))),)

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str | None] = mapped_column(String(320))
    business_account_id: Mapped[str | None] = mapped_column(
        ForeignKey("business_accounts.id", ondelete="SET NULL")
    )
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set when mail to the address bounced permanently.
    bounced: Mapped[bool] = mapped_column(Boolean, default=False)
    # Further fields a template may use ({{ contact.city }}), e.g. from a CSV.
    fields: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


class AssignmentMap(Timestamped, Base):
    """Ordered rules that pick the owner of an email no conversation claims."""

    __tablename__ = "assignment_maps"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    rules: Mapped[list[AssignmentRule]] = relationship(
        order_by="AssignmentRule.position",
        cascade="all, delete-orphan",
        lazy="selectin",
    )


class AssignmentRule(Base):
    __tablename__ = "assignment_rules"
    __table_args__ = (
        CheckConstraint(
            "field IN ('from_address','from_domain','to_address','subject_contains')",
            name="field",
        ),
    )

    map_id: Mapped[str] = mapped_column(
        ForeignKey("assignment_maps.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    field: Mapped[str] = mapped_column(String(30))
    value: Mapped[str] = mapped_column(String(320))
    owner_id: Mapped[str] = mapped_column(ForeignKey("employees.id"))
