"""How far a campaign got: emails by status, recipients skipped by reason."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.campaigns.common import SKIP_REASONS
from shared.errors import NotFound
from shared.models import Campaign, Email


def campaign_summary(session: Session, campaign_id: str) -> dict[str, Any]:
    """The campaign with its emails counted by status and skips by reason."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFound(f"campaign {campaign_id} does not exist")
    counts: dict[str, int] = {
        status: count
        for status, count in session.execute(
            select(Email.status, func.count())
            .where(Email.campaign_id == campaign_id)
            .group_by(Email.status)
        )
    }
    return {
        "id": campaign.id,
        "account": campaign.account_id,
        "template": campaign.template_id,
        "status": _progress_status(campaign.status, counts),
        "audience": {k: v for k, v in campaign.audience.items() if k != "contact_ids"},
        "scheduled_at": campaign.scheduled_at,
        "created_at": campaign.created_at,
        "emails": sum(counts.values()),
        "by_status": counts,
        "skipped": {r: campaign.skipped.get(r, 0) for r in SKIP_REASONS},
    }


def _progress_status(stored: str, counts: dict[str, int]) -> str:
    """``sent`` once no email of a queued campaign waits or is on its way."""
    waiting = counts.get("pending_processing", 0) + counts.get("in_process", 0)
    if stored == "queued" and not waiting:
        return "sent"
    return stored


def list_campaigns(session: Session) -> list[dict[str, Any]]:
    rows = []
    for campaign in session.scalars(select(Campaign).order_by(Campaign.created_at)):
        rows.append(campaign_summary(session, campaign.id))
    return rows
