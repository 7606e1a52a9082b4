"""Fixtures of the integration tests beyond the ones every test has."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest


@pytest.fixture
def local_time_ahead_of_utc() -> Iterator[None]:
    """This machine's clock shows UTC+05:30, so local time and UTC differ."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "IST-5:30"
    time.tzset()
    yield
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()
