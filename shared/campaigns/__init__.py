"""Mass email: a campaign's audience, and queuing one email per recipient.

A campaign is created with its audience (contacts chosen in the directory,
or a CSV file that creates or updates contacts) and queued once: every
recipient's email is rendered from the template in the sandbox and stored
pending, in chunks of bulk inserts, in one transaction that also moves the
campaign out of ``draft``. A second ``send`` finds it queued and queues
nothing.
"""

from shared.campaigns.audience import (
    CsvRecipient,
    create_campaign,
    parse_csv,
    read_csv,
    select_recipients,
)
from shared.campaigns.common import SKIP_REASONS, CampaignError
from shared.campaigns.queue import Queued, recipient_context, send_campaign
from shared.campaigns.report import campaign_summary, list_campaigns
from shared.campaigns.unsubscribe import bulk_headers, unsubscribe, unsubscribe_token

__all__ = [
    "SKIP_REASONS",
    "CampaignError",
    "CsvRecipient",
    "Queued",
    "bulk_headers",
    "campaign_summary",
    "create_campaign",
    "list_campaigns",
    "parse_csv",
    "read_csv",
    "recipient_context",
    "select_recipients",
    "send_campaign",
    "unsubscribe",
    "unsubscribe_token",
]
