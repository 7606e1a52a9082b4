"""Reading a campaign's audience file and choosing who gets the mail."""

from __future__ import annotations

import pytest

from shared.campaigns import bulk_headers, parse_csv, select_recipients
from shared.errors import ConfigError
from shared.models import Account, Contact


def test_csv_columns_other_than_email_and_name_become_fields() -> None:
    rows = parse_csv("email,name,city,plan\nann@example.com,Ann,Oslo,gold\n")

    assert rows[0].email == "ann@example.com"
    assert rows[0].name == "Ann"
    assert rows[0].fields == {"city": "Oslo", "plan": "gold"}


def test_csv_row_without_address_is_kept_to_be_counted_as_skipped() -> None:
    rows = parse_csv("email,name\n,Nobody\nbob@example.com,Bob\n")

    assert [r.email for r in rows] == [None, "bob@example.com"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name\nAnn\n", "row 1: no column 'email'"),
        ("email,name,name\na@example.com,A,B\n", "column 'name' appears twice"),
        ("email,name\na@example.com,A\nnot-an-address,B\n", "row 3: email:"),
        ("email,name\na@example.com,A,extra\n", "row 2: 3 values for 2 columns"),
        ('email,name\na@example.com,"Ann\r\nBcc: x@evil.test"\n', "name: line"),
        ("", "the file is empty"),
    ],
)
def test_a_bad_csv_is_rejected_with_its_row_and_column(
    content: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_csv(content, "people.csv")


def test_opted_out_bounced_addressless_and_duplicate_contacts_are_skipped() -> None:
    contacts = [
        Contact(id="a", email="ann@example.com", opted_out=False, bounced=False),
        Contact(id="b", email="ANN@example.com", opted_out=False, bounced=False),
        Contact(id="c", email="cy@example.com", opted_out=True, bounced=False),
        Contact(id="d", email="di@example.com", opted_out=False, bounced=True),
        Contact(id="e", email=None, opted_out=False, bounced=False),
        Contact(id="f", email="fay@example.com", opted_out=False, bounced=False),
    ]

    chosen, skipped = select_recipients(contacts)

    assert [c.id for c in chosen] == ["a", "f"]
    assert skipped == {"duplicate": 1, "opted_out": 1, "bounced": 1, "no_address": 1}


def test_bulk_mail_offers_one_click_unsubscribe_in_plain_ascii() -> None:
    account = Account(id="news", address="news@example.com")

    headers = bulk_headers(account, "spring", "ann")

    assert headers["List-Unsubscribe"].startswith(
        "<mailto:news@example.com?subject=unsubscribe>"
    )
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["Precedence"] == "bulk"
    assert all(v.isascii() for v in headers.values())
