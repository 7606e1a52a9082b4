"""Queuing a campaign: one rendered email per recipient, in bulk inserts.

Every email gets what ``outbox.queue_email`` would give it (Message-ID,
system tag, first status change, the message built to ``raw``) but rows go
in by the hundred: one ORM flush per email would make a large campaign take
minutes. Ids are taken from the sequence first, since the subject's tag
needs them.

With ``release``, each chunk is committed and published as soon as it is
stored, so sending starts while the rest is still being written. Its rows
go in already stamped ``enqueued_at`` (what ``outbox.release`` would do in
an UPDATE of its own); a chunk the broker does not take is unstamped, and
the scheduler publishes it later. Every recipient's template is filled
before the first commit, so a template or contact that fails still queues
nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import make_msgid
from typing import Any, cast

from sqlalchemy import Table, select, text
from sqlalchemy.orm import Session

from shared import outbox
from shared.campaigns.audience import Recipient, audience_of, select_recipients
from shared.campaigns.common import CHUNK, SKIP_REASONS, CampaignError, chunks
from shared.campaigns.unsubscribe import bulk_headers
from shared.db import copy_rows
from shared.errors import NotFound, SysmailError
from shared.mail.compose import Composition, InvalidHeader, build_raw, guess_type
from shared.models import (
    Account,
    Attachment,
    Campaign,
    Email,
    EmailStatusChange,
    OutboxEntry,
    Preferences,
    Template,
    utcnow,
)
from shared.templating import Rendered, render

log = logging.getLogger(__name__)

_EMAILS = cast(Table, Email.__table__)
_CHANGES = cast(Table, EmailStatusChange.__table__)
_FILES = cast(Table, Attachment.__table__)
_OUTBOX = cast(Table, OutboxEntry.__table__)
# Emails per commit when chunks are released as they go: the first reaches
# the sender after this many are stored.
RELEASE_CHUNK = 200


@dataclass
class Queued:
    """What ``send_campaign`` stored."""

    email_ids: list[int] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    scheduled_at: datetime | None = None


def send_campaign(
    session: Session,
    campaign_id: str,
    *,
    at: datetime | None = None,
    attachments: Sequence[tuple[str, str, bytes]] = (),
    progress: Callable[[int, int], None] | None = None,
    release: bool = False,
) -> Queued:
    """Queue one email per recipient; the caller commits, then releases.

    With ``release``, chunks are committed and published here as they are
    stored, when they are due and processing is not suspended, the
    campaign's status with the first one; the caller's commit then only
    ends the last, empty transaction.

    The campaign row is locked for the whole transaction, so a second send,
    even a concurrent one, finds it queued and stores nothing. An
    attachment the account may not send stops the whole campaign rather
    than being dropped from thousands of emails. ``progress`` is called
    after each chunk with the recipients stored so far and their total.
    """
    campaign = session.scalars(
        select(Campaign).where(Campaign.id == campaign_id).with_for_update()
    ).one_or_none()
    if campaign is None:
        raise NotFound(f"campaign {campaign_id} does not exist")
    if campaign.status != "draft":
        raise CampaignError(
            f"campaign {campaign_id} was already sent (status {campaign.status})"
        )
    account = session.get(Account, campaign.account_id)
    template = session.get(Template, campaign.template_id)
    if account is None or template is None:
        raise CampaignError(f"campaign {campaign_id}: account or template is gone")
    if not account.active:
        raise CampaignError(f"account {account.id} is inactive")
    if not account.outgoing_host:
        raise CampaignError(f"account {account.id} has no outgoing server")
    for filename, _, data in attachments:
        refusal = outbox.attachment_refusal(account, filename, len(data))
        if refusal:
            raise CampaignError(f"campaign {campaign_id}: {refusal}")

    contacts, no_address = audience_of(session, campaign)
    recipients, skipped = select_recipients(contacts)
    skipped["no_address"] += no_address
    queued = Queued(skipped={r: skipped[r] for r in SKIP_REASONS}, scheduled_at=at)
    files = [(f, t or guess_type(f), d) for f, t, d in attachments]
    preferences = outbox.preferences(session)
    publish = release and not preferences.suspended and (at is None or at <= utcnow())
    batch = _Batch(campaign, account, template, preferences, at, files, publish)

    # Every template is filled before anything is stored; the messages are
    # built chunk by chunk, while the first chunks are already being sent.
    filled = [batch.fill(contact) for contact in recipients]
    if release:
        _mark_queued(session, campaign, queued, at)
    # COPY on the session's connection: the ORM's bulk path would spend as
    # long again sorting out rows that are plain already, INSERT half as long.
    for chunk in chunks(filled, RELEASE_CHUNK if release else CHUNK):
        ids = _reserve_ids(session, len(chunk))
        db = session.connection()
        copy_rows(
            db, _EMAILS, [batch.email(i, *f) for i, f in zip(ids, chunk, strict=True)]
        )
        copy_rows(db, _CHANGES, [batch.queued(i) for i in ids])
        copy_rows(db, _OUTBOX, [{"email_id": i} for i in ids])
        if attachments:
            copy_rows(
                db, _FILES, [_attachment(i, *a) for i in ids for a in attachments]
            )
        queued.email_ids.extend(ids)
        if release:
            session.commit()
        if publish:
            outbox.publish_or_unstamp([(i, account.id) for i in ids])
        if progress is not None:
            progress(len(queued.email_ids), len(recipients))

    if not release:
        _mark_queued(session, campaign, queued, at)
    log.info(
        "campaign=%s account=%s queued %d emails, skipped %s",
        campaign.id,
        account.id,
        len(queued.email_ids),
        queued.skipped,
    )
    return queued


def _mark_queued(
    session: Session, campaign: Campaign, queued: Queued, at: datetime | None
) -> None:
    campaign.status = "queued"
    campaign.skipped = queued.skipped
    campaign.scheduled_at = at
    session.flush()


def _reserve_ids(session: Session, count: int) -> list[int]:
    return list(
        session.execute(
            text(
                "SELECT nextval(pg_get_serial_sequence('emails', 'id')) "
                "FROM generate_series(1, :n)"
            ),
            {"n": count},
        ).scalars()
    )


def recipient_context(campaign: Campaign, contact: Recipient) -> dict[str, Any]:
    """What a campaign template sees: the contact and the campaign, as data.

    A contact's fields are there both as ``contact.city`` and as
    ``contact.fields.city``; name and email win over a field so named.
    """
    fields = dict(contact.fields or {})
    return {
        "contact": {
            **fields,
            "id": contact.id,
            "name": contact.name,
            "email": contact.email,
            "fields": fields,
        },
        "campaign": {"id": campaign.id},
    }


@dataclass(frozen=True)
class _Batch:
    """Builds the rows of one campaign's emails."""

    campaign: Campaign
    account: Account
    template: Template
    preferences: Preferences
    at: datetime | None
    files: Sequence[tuple[str, str, bytes]] = ()
    # Published as stored: stamped as outbox.release stamps what it publishes.
    stamped: bool = False
    now: datetime = field(default_factory=utcnow)

    def fill(self, contact: Recipient) -> tuple[Recipient, dict[str, Any], Rendered]:
        """The template filled for one recipient, or CampaignError."""
        context = recipient_context(self.campaign, contact)
        try:
            return contact, context, render(self.template, context)
        except SysmailError as exc:
            raise CampaignError(
                f"campaign {self.campaign.id}: contact {contact.id}: {exc}"
            ) from exc

    def email(
        self,
        email_id: int,
        contact: Recipient,
        context: dict[str, Any],
        rendered: Rendered,
    ) -> dict[str, Any]:
        address = (contact.email or "").strip()
        tag = outbox.system_tag(email_id, self.preferences)
        from_address, from_name = outbox.sender_of(self.account, None)
        row = {
            "id": email_id,
            "account_id": self.account.id,
            "direction": "out",
            "kind": "campaign",
            "status": "pending_processing",
            "archived": False,
            "attempts": 0,
            "message_id": make_msgid(domain=_domain(self.account.address)),
            "subject": f"{rendered.subject} {tag}".strip(),
            "from_address": from_address,
            "from_name": from_name,
            "to_address": address,
            "to_addresses": [address],
            "cc_addresses": [],
            "reply_to": self.account.reply_address,
            "body_text": rendered.text,
            "body_html": rendered.html,
            "scheduled_at": self.at,
            "enqueued_at": self.now if self.stamped else None,
            "campaign_id": self.campaign.id,
            "contact_id": contact.id,
            "headers": bulk_headers(self.account, self.campaign.id, contact.id),
            "context": context,
        }
        row["raw"] = self._raw(row)
        return row

    def _raw(self, row: dict[str, Any]) -> bytes | None:
        try:
            return build_raw(
                Composition(
                    message_id=row["message_id"],
                    from_address=row["from_address"],
                    from_name=row["from_name"],
                    reply_to=row["reply_to"],
                    to=row["to_addresses"],
                    subject=row["subject"],
                    text=row["body_text"],
                    html=row["body_html"],
                    date=self.now,
                    headers=row["headers"],
                    attachments=self.files,
                )
            )
        except InvalidHeader:
            # Left to the sender, which fails the email with this reason.
            return None

    def queued(self, email_id: int) -> dict[str, Any]:
        reason = f"queued by campaign {self.campaign.id}"
        if self.at is not None:
            reason += f" for {self.at.isoformat(timespec='seconds')}"
        return {
            "email_id": email_id,
            "at": utcnow(),
            "from_status": None,
            "to_status": "pending_processing",
            "reason": reason,
        }


def _attachment(
    email_id: int, filename: str, content_type: str, data: bytes
) -> dict[str, Any]:
    return {
        "email_id": email_id,
        "filename": filename,
        "content_type": content_type or guess_type(filename),
        "size": len(data),
        "data": data,
    }


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "localhost"
