"""The one-click unsubscribe link of mass email, served by admin."""

from __future__ import annotations

from fastapi.testclient import TestClient

from services.admin import create_app
from shared.campaigns.unsubscribe import unsubscribe_token
from shared.db import session_scope
from shared.models import Contact


def add_contacts() -> None:
    with session_scope() as session:
        session.add(Contact(id="carol", name="Carol", email="carol@x.test"))
        session.add(Contact(id="dave", name="Dave", email="dave@x.test"))


def opted_out() -> dict[str, bool]:
    with session_scope() as session:
        return {c.id: c.opted_out for c in session.query(Contact)}


def test_a_one_click_post_opts_out_only_the_contact_of_the_link() -> None:
    add_contacts()
    token = unsubscribe_token("spring", "carol")

    response = TestClient(create_app()).post(
        f"/unsubscribe?token={token}", data={"List-Unsubscribe": "One-Click"}
    )

    assert response.status_code == 200
    assert opted_out() == {"carol": True, "dave": False}


def test_opening_the_link_changes_nothing_until_the_button_is_pressed() -> None:
    add_contacts()
    token = unsubscribe_token("spring", "carol")

    page = TestClient(create_app()).get(f"/unsubscribe?token={token}")

    assert page.status_code == 200 and "Unsubscribe</button>" in page.text
    assert opted_out() == {"carol": False, "dave": False}


def test_a_forged_token_is_refused_and_opts_out_nobody() -> None:
    add_contacts()
    payload, _, _ = unsubscribe_token("spring", "carol").partition(".")

    response = TestClient(create_app()).post(f"/unsubscribe?token={payload}.{'0' * 32}")

    assert response.status_code == 400
    assert opted_out() == {"carol": False, "dave": False}
