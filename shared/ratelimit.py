"""Per-account send rates, held across every sender worker through Redis.

The limit is a sliding window: at most N sends in any window of W seconds.
Each sender asks for a slot before it sends. Slots are booked in a Redis
sorted set by one Lua script, so the check and the booking are atomic and
all workers see the same clock (Redis's own). A slot may lie a little in the
future; the sender then waits for it, or, when it is too far ahead, books
nothing and tries the email again later.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from functools import lru_cache

import redis

from config.settings import get_settings
from shared.errors import ConfigError

_RATE = re.compile(
    r"^\s*(?P<count>\d+)\s*/\s*(?P<size>\d*)\s*"
    r"(?P<unit>s|sec|second|m|min|minute|h|hr|hour)s?\s*$",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}

# KEYS[1]: the account's set. ARGV: limit, window ms, longest wait ms, slots
# wanted, member prefix. Books slots one after another until one would lie
# further than the longest wait; returns the wait in ms of each booked slot.
_BOOK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local longest = tonumber(ARGV[3])
local wanted = tonumber(ARGV[4])
local waits = {}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
for n = 1, wanted do
  local count = redis.call('ZCARD', KEYS[1])
  local slot = now
  if count >= limit then
    local nth = redis.call('ZRANGE', KEYS[1], count - limit, count - limit,
                           'WITHSCORES')
    slot = math.max(slot, tonumber(nth[2]) + window)
  end
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if last[2] and tonumber(last[2]) > slot then
    slot = tonumber(last[2])
  end
  if slot - now > longest then
    if n == 1 then
      return {-(slot - now)}
    end
    break
  end
  redis.call('ZADD', KEYS[1], slot, ARGV[5] .. ':' .. n)
  redis.call('PEXPIRE', KEYS[1], slot - now + window + 1000)
  waits[n] = slot - now
end
return waits
"""


@dataclass(frozen=True)
class Rate:
    count: int
    window_seconds: float

    def __str__(self) -> str:
        return f"{self.count}/{self.window_seconds:g}s"


@dataclass(frozen=True)
class Booking:
    """A slot was booked (send after ``wait`` seconds) or not (retry then)."""

    booked: bool
    wait: float


def parse_rate(value: str) -> Rate:
    """``30/min``, ``5/2s``, ``1000/hour``: sends per window."""
    match = _RATE.match(value)
    if match is None or int(match["count"]) == 0:
        raise ConfigError(f"rate limit {value!r} is not like 30/min, 5/2s or 1000/hour")
    size = int(match["size"] or 1)
    seconds = _UNIT_SECONDS[match["unit"][0].lower()] * size
    if size == 0:
        raise ConfigError(f"rate limit {value!r} has an empty window")
    return Rate(count=int(match["count"]), window_seconds=float(seconds))


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def book(account_id: str, rate: Rate, longest_wait: float) -> Booking:
    """Book the account's next send slot if it is at most longest_wait away."""
    booked = book_many(account_id, rate, longest_wait, 1)
    return booked[0] if booked else Booking(booked=False, wait=0.0)


def book_many(
    account_id: str, rate: Rate, longest_wait: float, count: int
) -> list[Booking]:
    """Book up to ``count`` slots of the account in one round trip.

    Every returned booking is booked, in order, except when not even the
    first slot is near enough: then one unbooked Booking says how long until
    it is. Slots go one after another, so they keep the rate together.
    """
    client = _client(get_settings().redis_url)
    script = client.register_script(_BOOK)
    waits = script(
        keys=[f"sysmail:rate:{account_id}"],
        args=[
            rate.count,
            int(rate.window_seconds * 1000),
            int(longest_wait * 1000),
            count,
            uuid.uuid4().hex,
        ],
    )
    if len(waits) == 1 and int(waits[0]) < 0:
        return [Booking(booked=False, wait=-int(waits[0]) / 1000)]
    return [Booking(booked=True, wait=int(w) / 1000) for w in waits]
