"""Mass email through ``sysmail campaigns``, on the real database and broker."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pika
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from cli.main import cli
from config.settings import reset_settings
from services.devmail import SmtpServer
from shared import delivery, outbox
from shared.bus import STAGES
from shared.campaigns import (
    CampaignError,
    create_campaign,
    send_campaign,
    unsubscribe,
    unsubscribe_token,
)
from shared.crypto import encrypt
from shared.db import session_scope
from shared.mail.smtp import POOL
from shared.models import (
    Account,
    Attachment,
    BusinessAccount,
    Campaign,
    Contact,
    Email,
    EmailStatusChange,
    Template,
    utcnow,
)

SUBJECT = "Spring news for {{ contact.name }}"
TEXT = "Hello {{ contact.name }} in {{ contact.city }}."
HTML = "<p>Hello {{ contact.name }}, {{ contact.fields.plan }}</p>"


def queued_messages(broker_url: str) -> list[int]:
    """The email ids waiting in the send queue (taken off it)."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    channel = connection.channel()
    ids = []
    while True:
        method, _, body = channel.basic_get(STAGES["sender"].queue, auto_ack=True)
        if method is None:
            break
        ids.extend(json.loads(body)["args"][0]["email_ids"])
    connection.close()
    return ids


@pytest.fixture
def setup() -> None:
    """An account, a template using contact data, and a few contacts."""
    with session_scope() as session:
        session.add(Template(id="spring", subject=SUBJECT, text=TEXT, html=HTML))
        session.add(
            Account(
                id="news",
                address="news@example.test",
                display_name="Example News",
                outgoing_host="127.0.0.1",
            )
        )
        session.add(BusinessAccount(id="acme", name="Acme"))
        session.flush()
        session.add_all(
            [
                contact("ann", "ann@example.test", city="Oslo", plan="gold"),
                contact("bob", "bob@example.test", city="Rome", plan="<b>free</b>"),
                contact("cy", "cy@example.test", business="acme", city="Bonn"),
            ]
        )


def contact(
    contact_id: str,
    email: str | None,
    *,
    business: str | None = None,
    opted_out: bool = False,
    bounced: bool = False,
    **fields: str,
) -> Contact:
    return Contact(
        id=contact_id,
        name=contact_id.title(),
        email=email,
        business_account_id=business,
        opted_out=opted_out,
        bounced=bounced,
        fields={"plan": "basic", **fields},
    )


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def emails(campaign_id: str) -> list[Email]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(Email).where(Email.campaign_id == campaign_id).order_by(Email.id)
            )
        )


def show(campaign_id: str) -> dict[str, Any]:
    result = run("campaigns", "show", campaign_id, "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_each_contact_gets_an_email_rendered_with_their_data(
    setup: None, broker: str
) -> None:
    created = run(
        "campaigns", "create", "spring", "--account", "news", "--template", "spring",
        "--contacts",
    )  # fmt: skip
    sent = run("campaigns", "send", "spring")

    assert created.exit_code == 0, created.output
    assert sent.exit_code == 0, sent.output
    by_contact = {e.contact_id: e for e in emails("spring")}
    assert sorted(by_contact) == ["ann", "bob", "cy"]
    ann, bob = by_contact["ann"], by_contact["bob"]
    assert ann.to_addresses == ["ann@example.test"]
    assert ann.subject == f"Spring news for Ann [#{ann.id}]"
    assert ann.body_text == "Hello Ann in Oslo."
    assert ann.body_html == "<p>Hello Ann, gold</p>"
    # The HTML part escapes what a contact's data holds.
    assert bob.body_html == "<p>Hello Bob, &lt;b&gt;free&lt;/b&gt;</p>"
    assert ann.kind == "campaign" and ann.status == "pending_processing"
    assert ann.from_address == "news@example.test"
    assert ann.message_id and ann.message_id.endswith("@example.test>")
    assert len({e.message_id for e in by_contact.values()}) == 3
    assert sorted(queued_messages(broker)) == sorted(e.id for e in by_contact.values())


def test_every_queued_email_has_its_first_status_change(
    setup: None, broker: str
) -> None:
    run("campaigns", "create", "c", "--account", "news", "--template", "spring",
        "--contacts")  # fmt: skip
    run("campaigns", "send", "c")

    with session_scope() as session:
        changes = list(session.scalars(select(EmailStatusChange)))
    assert len(changes) == 3
    assert {c.to_status for c in changes} == {"pending_processing"}
    assert all(c.reason == "queued by campaign c" for c in changes)


def test_contacts_of_one_business_account_only(setup: None, broker: str) -> None:
    run("campaigns", "create", "acme-only", "--account", "news", "--template",
        "spring", "--contacts", "--business-account", "acme")  # fmt: skip
    run("campaigns", "send", "acme-only")

    assert [e.contact_id for e in emails("acme-only")] == ["cy"]


def test_skipped_recipients_are_counted_by_reason(setup: None, broker: str) -> None:
    with session_scope() as session:
        session.add_all(
            [
                contact("dee", "dee@example.test", opted_out=True),
                contact("eve", "eve@example.test", bounced=True),
                contact("fay", None),
                contact("gus", "ANN@Example.test"),
            ]
        )
    run("campaigns", "create", "c", "--account", "news", "--template", "spring",
        "--contacts")  # fmt: skip
    run("campaigns", "send", "c")

    summary = show("c")
    assert summary["skipped"] == {
        "opted_out": 1,
        "bounced": 1,
        "no_address": 1,
        "duplicate": 1,
    }
    assert summary["by_status"] == {"pending_processing": 3}
    assert summary["emails"] == 3
    assert summary["status"] == "queued"


def test_csv_audience_creates_and_updates_contacts(
    setup: None, broker: str, tmp_path: Path
) -> None:
    audience = tmp_path / "people.csv"
    audience.write_text(
        "email,name,city,plan\n"
        "ANN@example.test,Ann Lee,Oslo,platinum\n"
        "new@example.test,Newton,Lima,basic\n"
        ",Nobody,Nowhere,none\n"
        "new@example.test,Newton Again,Lima,basic\n"
    )

    created = run("campaigns", "create", "csv", "--account", "news", "--template",
                  "spring", "--csv", str(audience))  # fmt: skip
    sent = run("campaigns", "send", "csv")

    assert created.exit_code == 0, created.output
    assert sent.exit_code == 0, sent.output
    with session_scope() as session:
        ann = session.get(Contact, "ann")
        assert ann is not None
        assert (ann.name, ann.fields["plan"]) == ("Ann Lee", "platinum")
        new = session.scalars(
            select(Contact).where(Contact.email == "new@example.test")
        ).one()
        assert (new.name, new.fields) == (
            "Newton Again",
            {"city": "Lima", "plan": "basic"},
        )
    by_contact = {e.contact_id: e for e in emails("csv")}
    assert sorted(by_contact) == sorted(["ann", new.id])
    assert by_contact["ann"].body_html == "<p>Hello Ann Lee, platinum</p>"
    assert show("csv")["skipped"] == {
        "opted_out": 0,
        "bounced": 0,
        "no_address": 1,
        "duplicate": 1,
    }


def test_a_bad_csv_changes_nothing_and_names_row_and_column(
    setup: None, tmp_path: Path
) -> None:
    audience = tmp_path / "people.csv"
    audience.write_text(
        "email,name\nnew@example.test,New\nann@example.test,Ann\nnot-mail,X\n"
    )

    result = CliRunner().invoke(
        cli,
        ["campaigns", "create", "bad", "--account", "news", "--template", "spring",
         "--csv", str(audience)],
    )  # fmt: skip

    assert result.exit_code == 1
    assert result.stderr.startswith("sysmail: error: ")
    assert "people.csv: row 4: email:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    with session_scope() as session:
        assert session.get(Campaign, "bad") is None
        assert session.scalar(select(func.count()).select_from(Contact)) == 3
        ann = session.get(Contact, "ann")
        assert ann is not None and ann.name == "Ann"


def test_sending_a_campaign_twice_queues_it_once(setup: None, broker: str) -> None:
    run("campaigns", "create", "c", "--account", "news", "--template", "spring",
        "--contacts")  # fmt: skip
    first = run("campaigns", "send", "c")
    second = CliRunner().invoke(cli, ["campaigns", "send", "c"])

    assert first.exit_code == 0
    assert second.exit_code == 1
    assert "campaign c was already sent" in second.stderr
    assert len(emails("c")) == 3
    assert len(queued_messages(broker)) == 3


def test_two_sends_at_once_queue_the_campaign_once(setup: None) -> None:
    with session_scope() as session:
        create_campaign(session, "c", account_id="news", template_id="spring")
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def send() -> None:
        start.wait()
        try:
            with session_scope() as session:
                send_campaign(session, "c")
            outcomes.append("queued")
        except CampaignError:
            outcomes.append("refused")

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["queued", "refused"]
    assert len(emails("c")) == 3


def test_a_template_reaching_for_internals_fails_and_queues_nothing(
    setup: None,
) -> None:
    with session_scope() as session:
        session.add(
            Template(
                id="evil",
                subject="hi",
                text="{{ contact.__class__.__mro__[1].__subclasses__() }}",
            )
        )
    run("campaigns", "create", "c", "--account", "news", "--template", "evil",
        "--contacts")  # fmt: skip

    result = CliRunner().invoke(cli, ["campaigns", "send", "c"])

    assert result.exit_code == 1
    assert "template evil: text" in result.stderr
    assert "__subclasses__" not in result.stdout
    assert emails("c") == []
    assert show("c")["status"] == "draft"


def test_a_template_cannot_read_files(setup: None) -> None:
    with session_scope() as session:
        session.add(
            Template(id="files", subject="hi", text="{% include '/etc/passwd' %}")
        )
    run("campaigns", "create", "c", "--account", "news", "--template", "files",
        "--contacts")  # fmt: skip

    result = CliRunner().invoke(cli, ["campaigns", "send", "c"])

    assert result.exit_code == 1
    assert "root:" not in result.output
    assert emails("c") == []


def test_bulk_headers_offer_one_click_unsubscribe(setup: None, broker: str) -> None:
    run("campaigns", "create", "c", "--account", "news", "--template", "spring",
        "--contacts")  # fmt: skip
    run("campaigns", "send", "c")

    headers = emails("c")[0].headers
    assert headers["List-Unsubscribe"] == (
        "<mailto:news@example.test?subject=unsubscribe>"
    )
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["Precedence"] == "bulk"


def test_a_scheduled_campaign_waits_until_it_is_due(setup: None, broker: str) -> None:
    run("campaigns", "create", "c", "--account", "news", "--template", "spring",
        "--contacts")  # fmt: skip
    at = utcnow() + timedelta(seconds=2)

    sent = run("campaigns", "send", "c", "--at", at.isoformat())
    early = outbox.release_due()
    time.sleep(max(0.0, (at - utcnow()).total_seconds()) + 0.2)
    due = outbox.release_due()

    assert sent.exit_code == 0, sent.output
    assert "to go at" in sent.stdout
    assert early == 0
    assert due == 3
    assert all(e.scheduled_at == at for e in emails("c"))
    assert len(queued_messages(broker)) == 3


def test_a_large_campaign_queues_in_seconds_with_a_progress_line(
    setup: None, broker: str
) -> None:
    with session_scope() as session:
        session.add_all(
            contact(f"p{n:05}", f"p{n:05}@example.test", city="Oslo")
            for n in range(5000)
        )
    run("campaigns", "create", "big", "--account", "news", "--template", "spring",
        "--contacts")  # fmt: skip

    started = time.monotonic()
    result = run("campaigns", "send", "big")
    elapsed = time.monotonic() - started

    assert result.exit_code == 0, result.output
    assert "5003 emails queued" in result.stdout
    assert "queuing" in result.stderr
    assert elapsed < 30
    assert show("big")["by_status"] == {"pending_processing": 5003}
    assert len(queued_messages(broker)) == 5003


def test_a_campaign_at_a_time_without_a_zone_goes_at_the_machines_local_time(
    setup: None, broker: str, local_time_ahead_of_utc: None
) -> None:
    run("campaigns", "create", "c", "--account", "news", "--template", "spring",
        "--contacts")  # fmt: skip

    sent = run("campaigns", "send", "c", "--at", "2030-01-02T09:00")

    assert sent.exit_code == 0, sent.output
    assert "to go at 2030-01-02T09:00:00+05:30" in sent.stdout
    expected = datetime(2030, 1, 2, 3, 30, tzinfo=UTC)
    assert {e.scheduled_at for e in emails("c")} == {expected}
    help_text = run("campaigns", "send", "--help").output
    assert "this machine's local time" in help_text


@pytest.fixture
def delivering(setup: None, smtp_server: SmtpServer) -> Iterator[SmtpServer]:
    """The news account sends to the test's SMTP server."""
    with session_scope() as session:
        account = session.get(Account, "news")
        assert account is not None
        account.outgoing_host = smtp_server.host
        account.outgoing_port = smtp_server.port
        account.outgoing_encryption = "starttls"
        account.outgoing_auth = "custom"
        login, password = next(iter(smtp_server.users.items()))
        account.outgoing_username = login
        account.outgoing_password = encrypt(password)
    yield smtp_server
    POOL.close_all()


@pytest.fixture
def unsubscribe_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = "https://mail.example.test/a/rather/long/path/to/the/one-click/unsubscribe"
    monkeypatch.setenv("SYSMAIL_UNSUBSCRIBE_URL", url)
    reset_settings()
    yield url
    reset_settings()


def test_delivered_mail_carries_list_unsubscribe_unfolded(
    delivering: SmtpServer, unsubscribe_url: str
) -> None:
    with session_scope() as session:
        create_campaign(session, "c", account_id="news", template_id="spring")
    with session_scope() as session:
        queued = send_campaign(session, "c")

    for email_id in queued.email_ids:
        delivery.deliver(email_id)
    received = delivering.wait_for(3)

    raw = next(data for _, rcpt, data in received if rcpt == ["ann@example.test"])
    lines = raw.decode().split("\r\n")
    unsubscribe = [line for line in lines if line.startswith("List-Unsubscribe:")]
    assert unsubscribe == [
        "List-Unsubscribe: <mailto:news@example.test?subject=unsubscribe>, "
        f"<{unsubscribe_url}?token={unsubscribe_token('c', 'ann')}>"
    ]
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in lines
    assert "Precedence: bulk" in lines
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message["Subject"].startswith("Spring news for Ann [#")
    parts = {
        p.get_content_type(): p.get_content()
        for p in message.walk()
        if not p.is_multipart()
    }
    assert parts["text/plain"].strip() == "Hello Ann in Oslo."
    assert parts["text/html"].strip() == "<p>Hello Ann, gold</p>"
    assert {e.status for e in emails("c")} == {"processed"}
    assert show("c")["status"] == "sent"


def test_the_one_click_link_opts_out_only_its_own_contact(
    setup: None, unsubscribe_url: str
) -> None:
    token = unsubscribe_token("c", "ann")
    forged = unsubscribe_token("c", "ann").replace(b"ann".hex(), b"bob".hex())

    with session_scope() as session:
        unsubscribe(session, token)
    with pytest.raises(CampaignError), session_scope() as session:
        unsubscribe(session, forged)

    with session_scope() as session:
        opted_out = set(
            session.scalars(select(Contact.id).where(Contact.opted_out.is_(True)))
        )
    assert opted_out == {"ann"}


def test_an_attachment_goes_with_every_email(
    setup: None, broker: str, tmp_path: Path
) -> None:
    leaflet = tmp_path / "leaflet.pdf"
    leaflet.write_bytes(b"%PDF-1.4 spring")
    run("campaigns", "create", "c", "--account", "news", "--template", "spring",
        "--contacts")  # fmt: skip

    result = run("campaigns", "send", "c", "--attach", str(leaflet))

    assert result.exit_code == 0, result.output
    with session_scope() as session:
        files = list(session.scalars(select(Attachment)))
    assert sorted(f.email_id for f in files) == sorted(e.id for e in emails("c"))
    assert {(f.filename, f.content_type, f.data) for f in files} == {
        ("leaflet.pdf", "application/pdf", b"%PDF-1.4 spring")
    }


def test_delivered_campaign_mail_carries_the_attachment_from_the_accounts_name(
    delivering: SmtpServer, broker: str, tmp_path: Path
) -> None:
    leaflet = tmp_path / "leaflet.pdf"
    leaflet.write_bytes(b"%PDF-1.4 spring")
    run("campaigns", "create", "c", "--account", "news", "--template", "spring",
        "--contacts")  # fmt: skip
    run("campaigns", "send", "c", "--attach", str(leaflet))

    for email in emails("c"):
        delivery.deliver(email.id)
    received = delivering.wait_for(3)

    assert sorted(rcpt for _, [rcpt], _ in received) == [
        "ann@example.test", "bob@example.test", "cy@example.test",
    ]  # fmt: skip
    for _, _, raw in received:
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        assert message["From"] == "Example News <news@example.test>"
        [attachment] = list(message.iter_attachments())
        assert attachment.get_filename() == "leaflet.pdf"
        assert attachment.get_content_type() == "application/pdf"
        assert attachment.get_content() == b"%PDF-1.4 spring"
        body = message.get_body(("plain",))
        assert body is not None and body.get_content().startswith("Hello ")


def test_an_attachment_the_account_refuses_stops_the_campaign(
    setup: None, tmp_path: Path
) -> None:
    with session_scope() as session:
        account = session.get(Account, "news")
        assert account is not None
        account.attachment_types = [".pdf"]
    script = tmp_path / "run.exe"
    script.write_bytes(b"MZ")
    run("campaigns", "create", "c", "--account", "news", "--template", "spring",
        "--contacts")  # fmt: skip

    result = CliRunner().invoke(
        cli, ["campaigns", "send", "c", "--attach", str(script)]
    )

    assert result.exit_code == 1
    assert "run.exe: type not allowed" in result.stderr
    assert emails("c") == []


def test_a_line_break_in_contact_data_cannot_add_a_header(
    setup: None, broker: str
) -> None:
    with session_scope() as session:
        ann = session.get(Contact, "ann")
        assert ann is not None
        ann.name = "Ann\r\nBcc: victim@example.test"
    run("campaigns", "create", "c", "--account", "news", "--template", "spring",
        "--contacts")  # fmt: skip
    run("campaigns", "send", "c")

    subject = next(e.subject for e in emails("c") if e.contact_id == "ann")
    assert "\r" not in subject and "\n" not in subject
    assert subject.startswith("Spring news for Ann Bcc: victim@example.test [#")
