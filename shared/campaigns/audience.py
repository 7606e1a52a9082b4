"""Who a campaign goes to: the directory's contacts or a CSV file's rows.

A CSV file creates or updates contacts when the campaign is created; at
send time the contacts who must not get mass email are left out and counted.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.campaigns.common import CampaignError, chunks
from shared.errors import ConfigError, NotFound
from shared.models import Account, BusinessAccount, Campaign, Contact, Template

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CsvRecipient:
    """One row of an audience file."""

    row: int
    email: str | None
    name: str
    fields: dict[str, str]


def read_csv(path: Path) -> list[CsvRecipient]:
    """Read an audience file, or raise ConfigError naming the row and column.

    Columns ``email`` (required) and ``name``; any other column becomes a
    field of the contact. A row without an address is kept: it is counted
    as skipped when the campaign is sent.
    """
    try:
        content = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    return parse_csv(content, str(path))


def parse_csv(content: str, source: str = "csv") -> list[CsvRecipient]:
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ConfigError(f"{source}: the file is empty") from None
    except csv.Error as exc:
        raise ConfigError(f"{source}: row 1: {exc}") from exc
    _check_header(header, source)

    recipients = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            recipients.append(_recipient(header, row, reader.line_num, source))
    except csv.Error as exc:
        raise ConfigError(f"{source}: row {reader.line_num}: {exc}") from exc
    return recipients


def _check_header(header: list[str], source: str) -> None:
    if "email" not in header:
        raise ConfigError(f"{source}: row 1: no column 'email'")
    for index, name in enumerate(header, start=1):
        if not name:
            raise ConfigError(f"{source}: row 1: column {index} has no name")
        if header.count(name) > 1:
            raise ConfigError(f"{source}: row 1: column {name!r} appears twice")


def _recipient(
    header: list[str], row: list[str], number: int, source: str
) -> CsvRecipient:
    if len(row) != len(header):
        raise ConfigError(
            f"{source}: row {number}: {len(row)} values for {len(header)} columns"
        )
    values = dict(zip(header, (cell.strip() for cell in row), strict=True))
    for column, value in values.items():
        # A line break in a name would end up in a To header.
        if "\r" in value or "\n" in value:
            raise ConfigError(f"{source}: row {number}: {column}: line break")
    address = values.pop("email") or None
    if address is not None:
        try:
            # Syntax only: no DNS look-up for thousands of rows.
            address = validate_email(
                address,
                check_deliverability=False,
                globally_deliverable=False,
                test_environment=True,
            ).normalized
        except EmailNotValidError as exc:
            raise ConfigError(f"{source}: row {number}: email: {exc}") from exc
    name = values.pop("name", "")
    return CsvRecipient(row=number, email=address, name=name, fields=values)


def contact_id_for(address: str) -> str:
    """A stable id for a contact made from an audience file."""
    key = address.lower()
    return key if len(key) <= 100 else hashlib.sha256(key.encode()).hexdigest()


def upsert_contacts(session: Session, recipients: Sequence[CsvRecipient]) -> list[str]:
    """Create or update the contacts of an audience file; returns their ids.

    A contact is matched by address, case-insensitively; its name is
    replaced when the file gives one, and the file's fields are merged into
    the contact's.
    """
    addresses = {r.email.lower() for r in recipients if r.email}
    existing: dict[str, Contact] = {}
    for chunk in chunks(sorted(addresses)):
        for contact in session.scalars(
            select(Contact)
            .where(func.lower(Contact.email).in_(chunk))
            .order_by(Contact.created_at, Contact.id)
        ):
            existing.setdefault((contact.email or "").lower(), contact)

    new = {
        r.email.lower()
        for r in recipients
        if r.email and r.email.lower() not in existing
    }
    taken = _taken_ids(session, [contact_id_for(a) for a in new])

    ids = []
    for recipient in recipients:
        if recipient.email is None:
            continue
        key = recipient.email.lower()
        found = existing.get(key)
        if found is None:
            contact_id = contact_id_for(key)
            if contact_id in taken:
                # Another contact holds the id its old address gave it.
                contact_id = hashlib.sha256(key.encode()).hexdigest()
            found = Contact(
                id=contact_id,
                email=recipient.email,
                name=recipient.name,
                fields=dict(recipient.fields),
            )
            session.add(found)
            existing[key] = found
        else:
            if recipient.name:
                found.name = recipient.name
            found.fields = {**found.fields, **recipient.fields}
        ids.append(found.id)
    session.flush()
    return ids


def _taken_ids(session: Session, ids: Sequence[str]) -> set[str]:
    taken: set[str] = set()
    for chunk in chunks(sorted(ids)):
        taken.update(session.scalars(select(Contact.id).where(Contact.id.in_(chunk))))
    return taken


def create_campaign(
    session: Session,
    campaign_id: str,
    *,
    account_id: str,
    template_id: str,
    csv_path: Path | None = None,
    business_account_id: str | None = None,
) -> Campaign:
    """Store a campaign and its audience: the directory's contacts or a file.

    Without a file the audience is every contact (of one business account
    when given), chosen again when the campaign is sent, so that opt-outs
    until then count.
    """
    if session.get(Campaign, campaign_id) is not None:
        raise CampaignError(f"campaign {campaign_id} already exists")
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound(f"account {account_id} does not exist")
    if session.get(Template, template_id) is None:
        raise NotFound(f"template {template_id} does not exist")
    if business_account_id is not None and csv_path is not None:
        raise CampaignError("--business-account chooses contacts, not a CSV file")
    if (
        business_account_id is not None
        and session.get(BusinessAccount, business_account_id) is None
    ):
        raise NotFound(f"business account {business_account_id} does not exist")

    audience: dict[str, Any]
    if csv_path is None:
        audience = {"source": "contacts", "business_account_id": business_account_id}
    else:
        recipients = read_csv(csv_path)
        audience = {
            "source": "csv",
            "file": csv_path.name,
            "contact_ids": upsert_contacts(session, recipients),
            "no_address": sum(1 for r in recipients if r.email is None),
        }

    campaign = Campaign(
        id=campaign_id,
        account_id=account_id,
        template_id=template_id,
        status="draft",
        audience=audience,
        skipped={},
    )
    session.add(campaign)
    session.flush()
    log.info(
        "campaign=%s account=%s created, audience %s",
        campaign_id,
        account_id,
        audience["source"],
    )
    return campaign


@dataclass(frozen=True, slots=True)
class Recipient:
    """What mass email needs of a contact, read as plain rows: a large
    audience as ORM objects cost a tenth of the time to queue it."""

    id: str
    name: str
    email: str | None
    opted_out: bool
    bounced: bool
    fields: dict[str, Any]


class Addressee(Protocol):
    """What choosing recipients reads of a contact."""

    @property
    def email(self) -> str | None: ...

    @property
    def opted_out(self) -> bool: ...

    @property
    def bounced(self) -> bool: ...


_RECIPIENT = select(
    Contact.id,
    Contact.name,
    Contact.email,
    Contact.opted_out,
    Contact.bounced,
    Contact.fields,
)


def audience_of(session: Session, campaign: Campaign) -> tuple[list[Recipient], int]:
    """The campaign's contacts in order, and the rows known to lack an address."""
    audience = campaign.audience
    if audience.get("source") == "csv":
        ids: list[str] = list(audience.get("contact_ids", []))
        by_id: dict[str, Recipient] = {}
        for chunk in chunks(sorted(set(ids))):
            rows = session.execute(_RECIPIENT.where(Contact.id.in_(chunk)))
            by_id.update((row.id, Recipient(*row)) for row in rows)
        contacts = [by_id[i] for i in ids if i in by_id]
        return contacts, int(audience.get("no_address", 0))

    query = _RECIPIENT.order_by(Contact.id)
    business_account_id = audience.get("business_account_id")
    if business_account_id is not None:
        query = query.where(Contact.business_account_id == business_account_id)
    return [Recipient(*row) for row in session.execute(query)], 0


_Contact = TypeVar("_Contact", bound=Addressee)


def select_recipients(
    contacts: Iterable[_Contact],
) -> tuple[list[_Contact], Counter[str]]:
    """Leave out who must not get the mail; count each reason."""
    chosen: list[_Contact] = []
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    for contact in contacts:
        address = (contact.email or "").strip()
        if contact.opted_out:
            skipped["opted_out"] += 1
        elif contact.bounced:
            skipped["bounced"] += 1
        elif not address:
            skipped["no_address"] += 1
        elif address.lower() in seen:
            skipped["duplicate"] += 1
        else:
            seen.add(address.lower())
            chosen.append(contact)
    return chosen, skipped
