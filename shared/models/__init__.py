"""Every table of sysmail; importing this package registers them all."""

from shared.models.accounts import (
    Account,
    MailboxFolder,
    MailboxPoll,
    Pop3Uidl,
    Preferences,
    ScheduledJob,
    Template,
)
from shared.models.base import Base, utcnow
from shared.models.directory import (
    AssignmentMap,
    AssignmentRule,
    BusinessAccount,
    Contact,
    Employee,
    User,
)
from shared.models.emails import (
    Attachment,
    Email,
    EmailStatusChange,
    EmailTrace,
    OutboxEntry,
)
from shared.models.records import Activity, Campaign, Case, Lead

__all__ = [
    "Account",
    "Activity",
    "AssignmentMap",
    "AssignmentRule",
    "Attachment",
    "Base",
    "BusinessAccount",
    "Campaign",
    "Case",
    "Contact",
    "Email",
    "EmailStatusChange",
    "EmailTrace",
    "Employee",
    "Lead",
    "MailboxFolder",
    "MailboxPoll",
    "OutboxEntry",
    "Pop3Uidl",
    "Preferences",
    "ScheduledJob",
    "Template",
    "User",
    "utcnow",
]
