"""Emails handed to the sender in chunks of one account each."""

from __future__ import annotations

from shared.outbox import SEND_CHUNK, chunked


def test_each_chunk_holds_emails_of_one_account_only() -> None:
    emails = [(n, "news" if n % 2 else "support") for n in range(1, 11)]

    chunks = list(chunked(emails))

    assert sorted(chunks) == [(1, 3, 5, 7, 9), (2, 4, 6, 8, 10)]


def test_a_campaign_splits_into_chunks_that_cover_every_email_once() -> None:
    emails = [(n, "news") for n in range(SEND_CHUNK * 3 + 7, 0, -1)]

    chunks = list(chunked(emails))

    assert [len(c) for c in chunks] == [SEND_CHUNK] * 3 + [7]
    assert [i for c in chunks for i in c] == list(range(1, SEND_CHUNK * 3 + 8))
