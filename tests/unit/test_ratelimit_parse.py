"""How an account's rate limit is written."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.ratelimit import Rate, parse_rate


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("30/min", Rate(30, 60.0)),
        ("30 / minute", Rate(30, 60.0)),
        ("5/2s", Rate(5, 2.0)),
        ("1000/hour", Rate(1000, 3600.0)),
        ("10/sec", Rate(10, 1.0)),
        ("100/10min", Rate(100, 600.0)),
    ],
)
def test_a_rate_is_a_count_per_window(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "30", "fast", "0/min", "30/day", "5/0s"])
def test_a_rate_that_is_not_a_count_per_window_is_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_rate(text)
