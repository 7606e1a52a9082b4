"""What every part of the campaigns package shares."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from shared.errors import SysmailError

T = TypeVar("T")

# Rows per bulk statement: large enough to amortise round trips, small
# enough that the progress line moves.
CHUNK = 500
SKIP_REASONS = ("opted_out", "bounced", "no_address", "duplicate")


class CampaignError(SysmailError):
    """A campaign cannot be created or sent as asked; nothing was changed."""


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
