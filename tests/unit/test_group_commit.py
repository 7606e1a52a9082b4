"""A worker's threads share the commits of their processed statuses."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from shared.delivery import records
from shared.delivery.claims import Claim
from shared.mail.smtp import Accepted
from shared.models import Account


class Statements:
    """Stands in for the database connection: keeps each group written."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []

    def execute(self, query: str, params: dict[str, Any], prepare: bool) -> None:
        self.groups.append(list(params["ids"]))


def sent(email_id: int) -> list[tuple[Claim, Accepted]]:
    claim = Claim(
        email_id=email_id,
        attempts=1,
        account=Account(id="news"),
        envelope_from="news@example.test",
        recipients=["reader@example.test"],
        raw=b"",
    )
    return [(claim, Accepted(250, "OK"))]


def record_while_another_sends(
    commits: records.GroupCommit, db: Statements, send_seconds: float
) -> None:
    """Thread 2 is sending when thread 1 records; it records once done."""
    started = threading.Event()

    def second() -> None:
        with commits.sending():
            started.set()
            time.sleep(send_seconds)
        commits.record(db, sent(2))  # type: ignore[arg-type]

    thread = threading.Thread(target=second)
    thread.start()
    started.wait()
    commits.record(db, sent(1))  # type: ignore[arg-type]
    thread.join()


def test_a_record_waits_a_moment_for_a_thread_still_sending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(records, "GATHER_SECONDS", 2.0)
    db = Statements()

    record_while_another_sends(records.GroupCommit(), db, send_seconds=0.05)

    assert db.groups == [[1, 2]]


def test_a_record_waits_no_longer_than_the_gathering_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(records, "GATHER_SECONDS", 0.01)
    db = Statements()

    record_while_another_sends(records.GroupCommit(), db, send_seconds=0.3)

    assert db.groups == [[1], [2]]


def test_a_record_with_nobody_sending_is_written_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(records, "GATHER_SECONDS", 30.0)
    db = Statements()
    done = threading.Event()

    def alone() -> None:
        records.GroupCommit().record(db, sent(1))  # type: ignore[arg-type]
        done.set()

    threading.Thread(target=alone, daemon=True).start()

    assert done.wait(5.0)
    assert db.groups == [[1]]
