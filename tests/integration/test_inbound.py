"""Incoming processing, stage by stage without a broker: records and replies."""

from __future__ import annotations

import email
from collections.abc import Iterator
from datetime import datetime
from email import policy
from email.message import EmailMessage

import pytest
from sqlalchemy import select

from services.devmail import Dovecot, SmtpServer
from shared.crypto import encrypt
from shared.db import session_scope
from shared.delivery import deliver
from shared.errors import NotFound
from shared.inbound.classify import classify_email
from shared.inbound.cleanup import delete_from_server
from shared.inbound.fetch import fetch_mailbox
from shared.inbound.filing import file_email
from shared.inbound.replay import replay_message
from shared.inbound.respond import REPLY_CAP, respond_to_email
from shared.inbound.store import store_received
from shared.models import (
    Account,
    Activity,
    AssignmentMap,
    AssignmentRule,
    Attachment,
    BusinessAccount,
    Campaign,
    Case,
    Contact,
    Email,
    EmailTrace,
    Employee,
    Lead,
    Template,
)
from tests.fixtures.accounts import outgoing_fields
from tests.fixtures.mailservers import unique_login
from tests.unit.test_parse import DSN

ACCOUNT = "support"
ADDRESS = "support@example.test"


@pytest.fixture(autouse=True)
def account() -> Iterator[None]:
    """A support account that processes mail: receipts, cases, leads, routing."""
    with session_scope() as session:
        session.add_all(
            [
                Template(
                    id="ack",
                    subject="Re: {{ email.subject }}",
                    text="We received your email. Case {{ case.id }}.\n",
                ),
                Template(
                    id="unassigned",
                    subject="Who are you?",
                    text="Hello {{ contact.name }}, we could not place your email.\n",
                ),
                Employee(id="alice", name="Alice", email="alice@example.test"),
                Employee(id="bob", name="Bob", email="bob@example.test"),
            ]
        )
        session.flush()
        session.add(
            Account(
                id=ACCOUNT,
                address=ADDRESS,
                display_name="Support",
                incoming_protocol="none",
                outgoing_host="127.0.0.1",
                outgoing_port=25,
                outgoing_encryption="none",
                processing_active=True,
                confirm_receipt_template_id="ack",
                create_case=True,
                attach_to_contact=True,
                create_lead=True,
                route_to_owner=False,
                default_owner_id="alice",
            )
        )
    yield


def configure(**fields: object) -> None:
    with session_scope() as session:
        account = session.get(Account, ACCOUNT)
        assert account is not None
        for name, value in fields.items():
            setattr(account, name, value)


def imap_account(dovecot: Dovecot, **fields: object) -> str:
    """Point the support account at a fresh Dovecot mailbox; its login."""
    login = unique_login("inbound")
    dovecot.add_user(login, "box-secret")
    configure(
        incoming_protocol="imap",
        incoming_host=dovecot.host,
        incoming_port=dovecot.imaps_port,
        incoming_encryption="ssl",
        root_folder="INBOX",
        incoming_username=login,
        incoming_password=encrypt("box-secret"),
        **fields,
    )
    return login


def mail(
    subject: str = "My printer is on fire",
    sender: str = "Ann Customer <ann@example.org>",
    message_id: str | None = "<q1@example.org>",
    **headers: str,
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ADDRESS
    message["Subject"] = subject
    if message_id:
        message["Message-ID"] = message_id
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("Please help.\n")
    return message.as_bytes()


def receive(raw: bytes) -> int:
    with session_scope() as session:
        account = session.get(Account, ACCOUNT)
        assert account is not None
        email_id = store_received(session, account, raw, folder="INBOX", uid="1")
    assert email_id is not None
    return email_id


def process(email_id: int) -> list[int]:
    """The stages in order, as the broker would run them; queued email ids."""
    if not classify_email(email_id):
        return []
    if not file_email(email_id):
        return []
    return respond_to_email(email_id).queued


def load(email_id: int) -> Email:
    with session_scope() as session:
        found = session.get(Email, email_id)
        assert found is not None
        return found


def traced(email_id: int) -> list[tuple[str, str, str]]:
    with session_scope() as session:
        rows = session.execute(
            select(EmailTrace.stage, EmailTrace.decision, EmailTrace.detail)
            .where(EmailTrace.email_id == email_id)
            .order_by(EmailTrace.id)
        ).all()
    return [(r[0], r[1], r[2]) for r in rows]


def all_of(model: type[object]) -> list[object]:
    with session_scope() as session:
        return list(session.scalars(select(model)))


def test_mailbox_to_smtp_a_new_email_creates_a_case_and_its_receipt_is_delivered(
    dovecot: Dovecot, smtp_server: SmtpServer
) -> None:
    login = imap_account(dovecot, **outgoing_fields(smtp_server))
    dovecot.append(login, mail())
    received: list[int] = []

    fetch_mailbox(ACCOUNT, received.append)
    [incoming_id] = received
    [receipt_id] = process(incoming_id)
    deliver(receipt_id)

    [(mail_from, rcpt_tos, data)] = smtp_server.wait_for(1)
    reply = email.message_from_bytes(data, policy=policy.default)
    assert rcpt_tos == ["ann@example.org"]
    assert mail_from == ADDRESS
    assert reply["In-Reply-To"] == "<q1@example.org>"
    assert reply["Auto-Submitted"] == "auto-replied"
    assert str(reply["Subject"]).startswith("Re: My printer is on fire")
    [case] = all_of(Case)
    assert isinstance(case, Case)
    assert f"Case {case.id}." in reply.get_content()
    incoming = load(incoming_id)
    assert incoming.status == "processed"
    assert incoming.case_id == case.id
    assert load(receipt_id).status == "processed"


def test_a_new_email_gets_a_case_owned_by_the_default_owner_and_a_receipt() -> None:
    incoming_id = receive(mail())

    [receipt_id] = process(incoming_id)

    incoming = load(incoming_id)
    receipt = load(receipt_id)
    [case] = all_of(Case)
    assert isinstance(case, Case)
    assert case.subject == "My printer is on fire"
    assert case.owner_id == "alice"
    assert incoming.case_id == case.id
    assert incoming.status == "processed"
    assert receipt.kind == "receipt"
    assert receipt.in_reply_to == "<q1@example.org>"
    assert receipt.to_addresses == ["ann@example.org"]
    assert receipt.case_id == case.id
    activities = all_of(Activity)
    assert [a.case_id for a in activities if isinstance(a, Activity)] == [case.id]


def test_automatic_mail_creates_no_case_no_lead_and_gets_no_receipt() -> None:
    incoming_id = receive(mail(Auto_Submitted="auto-replied"))

    assert process(incoming_id) == []

    incoming = load(incoming_id)
    assert incoming.is_automatic
    assert incoming.status == "processed"
    assert all_of(Case) == []
    assert all_of(Lead) == []
    decisions = {decision for _, decision, _ in traced(incoming_id)}
    assert {"automatic", "no records", "no reply"} <= decisions


def test_a_reply_joins_its_case_reopens_it_and_gets_no_second_receipt() -> None:
    first_id = receive(mail())
    [receipt_id] = process(first_id)
    case_id = load(first_id).case_id
    with session_scope() as session:
        case = session.get(Case, case_id)
        assert case is not None
        case.status = "closed"
        case.closed_at = datetime.now().astimezone()
    receipt_message_id = load(receipt_id).message_id
    assert receipt_message_id is not None

    reply_id = receive(
        mail(
            subject="Re: My printer is on fire",
            message_id="<q2@example.org>",
            In_Reply_To=receipt_message_id,
        )
    )
    queued = process(reply_id)

    reply = load(reply_id)
    assert queued == []
    assert reply.parent_id == receipt_id
    assert reply.case_id == case_id
    assert len(all_of(Case)) == 1
    with session_scope() as session:
        reopened = session.get(Case, case_id)
        assert reopened is not None and reopened.status == "open"
    assert ("classifier", "thread", f"In-Reply-To matched email {receipt_id}") in (
        traced(reply_id)
    )


def test_the_system_tag_in_the_subject_threads_a_reply_without_headers() -> None:
    first_id = receive(mail())
    [receipt_id] = process(first_id)
    tagged_subject = load(receipt_id).subject
    assert f"[#{receipt_id}]" in tagged_subject

    reply_id = receive(
        mail(subject=f"Re: {tagged_subject}", message_id="<q3@example.org>")
    )
    process(reply_id)

    reply = load(reply_id)
    assert reply.parent_id == receipt_id
    assert reply.case_id == load(first_id).case_id


def test_references_thread_a_reply_when_in_reply_to_is_unknown() -> None:
    first_id = receive(mail())
    process(first_id)

    reply_id = receive(
        mail(
            message_id="<q4@example.org>",
            In_Reply_To="<unknown@elsewhere>",
            References="<older@elsewhere> <q1@example.org>",
        )
    )
    process(reply_id)

    assert load(reply_id).parent_id == first_id


def test_a_known_contact_is_matched_by_address_in_any_case() -> None:
    with session_scope() as session:
        session.add(BusinessAccount(id="acme", name="ACME Ltd"))
        session.flush()
        session.add(
            Contact(
                id="ann",
                name="Ann",
                email="Ann@Example.ORG",
                business_account_id="acme",
            )
        )

    incoming_id = receive(mail(sender="ANN@example.org"))
    process(incoming_id)

    incoming = load(incoming_id)
    assert (incoming.contact_id, incoming.business_account_id) == ("ann", "acme")
    assert all_of(Lead) == []
    [activity] = all_of(Activity)
    assert isinstance(activity, Activity)
    assert (activity.contact_id, activity.business_account_id) == ("ann", "acme")
    assert activity.case_id == incoming.case_id


def test_an_unknown_sender_becomes_a_lead_named_from_the_display_name() -> None:
    incoming_id = receive(mail(sender="=?utf-8?q?J=C3=B6rg_M=C3=BCller?= <j@ex.org>"))

    process(incoming_id)

    [lead] = all_of(Lead)
    assert isinstance(lead, Lead)
    assert (lead.name, lead.email, lead.owner_id) == (
        "Jörg Müller",
        "j@ex.org",
        "alice",
    )
    assert load(incoming_id).lead_id == lead.id


def test_unassigned_mail_gets_the_unassigned_reply() -> None:
    configure(
        create_case=False,
        create_lead=False,
        confirm_receipt_template_id=None,
        reply_unassigned_template_id="unassigned",
    )
    incoming_id = receive(mail())

    [reply_id] = process(incoming_id)

    reply = load(reply_id)
    assert reply.kind == "reply"
    assert reply.to_addresses == ["ann@example.org"]
    assert reply.body_text == "Hello Ann Customer, we could not place your email.\n"
    assert all_of(Case) == []


def test_mail_from_a_known_contact_is_not_unassigned() -> None:
    configure(
        create_case=False,
        confirm_receipt_template_id=None,
        reply_unassigned_template_id="unassigned",
    )
    with session_scope() as session:
        session.add(Contact(id="ann", name="Ann", email="ann@example.org"))

    assert process(receive(mail())) == []


def test_the_assignment_map_picks_the_owner_and_skips_inactive_employees() -> None:
    with session_scope() as session:
        session.add(Employee(id="carol", name="Carol", email="c@x.test", active=False))
        session.flush()
        session.add(
            AssignmentMap(
                id="support-map",
                rules=[
                    AssignmentRule(
                        position=0,
                        field="subject_contains",
                        value="fire",
                        owner_id="carol",
                    ),
                    AssignmentRule(
                        position=1,
                        field="from_domain",
                        value="example.org",
                        owner_id="bob",
                    ),
                ],
            )
        )
    configure(assignment_map_id="support-map")

    incoming_id = receive(mail())
    process(incoming_id)

    assert load(incoming_id).owner_id == "bob"
    [case] = all_of(Case)
    assert isinstance(case, Case) and case.owner_id == "bob"
    assert any(
        decision == "owner" and "rule 2 of map support-map" in detail
        for _, decision, detail in traced(incoming_id)
    )


def test_routing_forwards_to_the_owner_with_the_source_information() -> None:
    configure(route_to_owner=True, add_source_info=True)
    incoming_id = receive(mail())

    queued = process(incoming_id)

    kinds = {load(i).kind: load(i) for i in queued}
    forward = kinds["forward"]
    case_id = load(incoming_id).case_id
    assert forward.to_addresses == ["alice@example.test"]
    assert forward.subject.startswith("Fwd: My printer is on fire")
    assert forward.body_text is not None
    assert f"case #{case_id}" in forward.body_text
    assert "Please help." in forward.body_text


def test_automatic_replies_to_one_sender_stop_at_the_hourly_cap() -> None:
    queued = []
    for number in range(REPLY_CAP + 2):
        incoming_id = receive(
            mail(subject=f"Question {number}", message_id=f"<cap{number}@example.org>")
        )
        queued += process(incoming_id)

    assert len(queued) == REPLY_CAP
    assert any(
        decision == "no receipt" and "held back" in detail
        for _, decision, detail in traced(incoming_id)
    )


def test_with_processing_off_the_email_is_stored_and_closed_untouched() -> None:
    configure(processing_active=False)
    incoming_id = receive(mail())

    assert not classify_email(incoming_id)

    incoming = load(incoming_id)
    assert incoming.status == "processed"
    assert ("classifier", "processing off") in [
        (s, d) for s, d, _ in traced(incoming_id)
    ]
    assert all_of(Case) == []


def test_a_bounce_marks_the_sent_email_and_the_contact_and_is_not_answered() -> None:
    with session_scope() as session:
        session.add(Contact(id="gone", name="Gone", email="gone@example.org"))
        sent = Email(
            account_id=ACCOUNT,
            direction="out",
            status="processed",
            message_id="<sent-17@example.test>",
            to_address="gone@example.org",
        )
        session.add(sent)
        session.flush()
        sent_id = sent.id

    bounce_id = receive(DSN)
    assert process(bounce_id) == []

    assert load(sent_id).bounced
    with session_scope() as session:
        contact = session.get(Contact, "gone")
        assert contact is not None and contact.bounced
    assert all_of(Case) == []


def test_a_reply_to_mass_email_is_filed_on_the_campaign_and_contact() -> None:
    with session_scope() as session:
        session.add(Contact(id="ann", name="Ann", email="ann@example.org"))
        session.add(Campaign(id="spring", account_id=ACCOUNT, template_id="ack"))
        session.flush()
        sent = Email(
            account_id=ACCOUNT,
            direction="out",
            kind="campaign",
            status="processed",
            message_id="<spring-1@example.test>",
            campaign_id="spring",
            contact_id="ann",
        )
        session.add(sent)
    configure(attach_to_contact=False, create_case=False)

    reply_id = receive(mail(In_Reply_To="<spring-1@example.test>"))
    process(reply_id)

    [activity] = all_of(Activity)
    assert isinstance(activity, Activity)
    assert (activity.campaign_id, activity.contact_id) == ("spring", "ann")
    assert activity.email_id == reply_id


def test_mail_without_headers_is_processed_and_traced_but_not_answered() -> None:
    incoming_id = receive(b"\x00\xff garbage, no headers")

    assert process(incoming_id) == []

    assert load(incoming_id).status == "processed"
    decisions = [
        (stage, decision, detail) for stage, decision, detail in traced(incoming_id)
    ]
    assert ("classifier", "sender", "no sender address") in decisions
    assert ("responder", "no receipt", "the email has no sender address") in decisions


def test_processing_the_same_email_twice_files_and_replies_once() -> None:
    incoming_id = receive(mail())
    first = process(incoming_id)

    second = process(incoming_id)

    assert len(first) == 1
    assert second == []
    assert len(all_of(Case)) == 1


def fetch_and_process() -> list[tuple[int, bool]]:
    """Each fetched email's id and whether it was deleted from the server."""
    received: list[int] = []
    fetch_mailbox(ACCOUNT, received.append)
    outcome = []
    for email_id in received:
        assert classify_email(email_id) and file_email(email_id)
        response = respond_to_email(email_id)
        deleted = response.delete_from_server and delete_from_server(email_id)
        outcome.append((email_id, deleted))
    return outcome


def test_delete_processed_always_removes_the_message_once_processed(
    dovecot: Dovecot,
) -> None:
    login = imap_account(dovecot, after_receive="mark_read", delete_processed="always")
    dovecot.append(login, mail())

    [(email_id, deleted)] = fetch_and_process()

    assert deleted
    assert dovecot.list(login) == []
    assert load(email_id).status == "processed"


def test_delete_if_none_succeeded_removes_only_mail_nothing_was_done_for(
    dovecot: Dovecot,
) -> None:
    login = imap_account(
        dovecot, after_receive="mark_read", delete_processed="if_none_succeeded"
    )
    dovecot.append(login, mail())
    dovecot.append(
        login, mail(message_id="<auto@example.org>", Auto_Submitted="auto-replied")
    )

    outcome = fetch_and_process()

    assert [deleted for _, deleted in outcome] == [False, True]
    [(_, flags)] = dovecot.list(login)
    assert b"\\Seen" in flags


def test_delete_processed_never_leaves_the_message_on_the_server(
    dovecot: Dovecot,
) -> None:
    login = imap_account(dovecot, after_receive="leave", delete_processed="never")
    dovecot.append(login, mail())

    [(_, deleted)] = fetch_and_process()

    assert not deleted
    assert len(dovecot.list(login)) == 1


def test_refused_attachments_are_dropped_on_record_and_not_forwarded() -> None:
    configure(
        route_to_owner=True,
        attachment_types=[".pdf"],
        attachment_max_bytes=1000,
    )
    message = email.message_from_bytes(mail(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    message.add_attachment(
        b"%PDF", maintype="application", subtype="pdf", filename="a.pdf"
    )
    message.add_attachment(
        b"MZ", maintype="application", subtype="x-exe", filename="b.exe"
    )
    message.add_attachment(
        b"x" * 2000, maintype="application", subtype="pdf", filename="big.pdf"
    )
    incoming_id = receive(message.as_bytes())

    queued = process(incoming_id)

    with session_scope() as session:
        rows = session.scalars(
            select(Attachment).where(Attachment.email_id == incoming_id)
        ).all()
        kept = {a.filename: a.data for a in rows}
        dropped = {a.filename: a.dropped_reason for a in rows}
        [forward] = [i for i in queued if load(i).kind == "forward"]
        forwarded = session.scalars(
            select(Attachment.filename).where(
                Attachment.email_id == forward, Attachment.data.is_not(None)
            )
        ).all()
    assert kept == {"a.pdf": b"%PDF", "b.exe": None, "big.pdf": None}
    assert dropped["a.pdf"] is None
    assert "type not allowed" in (dropped["b.exe"] or "")
    assert "more than the limit" in (dropped["big.pdf"] or "")
    assert forwarded == ["a.pdf"]
    assert ("classifier", "attachment dropped") in [
        (s, d) for s, d, _ in traced(incoming_id)
    ]


def test_no_reply_goes_to_a_reply_to_address_of_the_system_itself() -> None:
    incoming_id = receive(mail(Reply_To=ADDRESS))

    assert process(incoming_id) == []

    assert ("responder", "no receipt", f"{ADDRESS} is the system's own") in traced(
        incoming_id
    )


def test_a_replayed_eml_is_processed_like_received_mail_and_stored_once() -> None:
    announced: list[int] = []

    first = replay_message(ACCOUNT, mail(), announced.append)
    again = replay_message(ACCOUNT, mail(), announced.append)

    assert first is not None and again is None
    assert announced == [first]
    assert len(process(first)) == 1
    with pytest.raises(NotFound):
        replay_message("nobody", mail(), announced.append)
