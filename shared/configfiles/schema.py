"""What each configuration file may say, checked before anything is written.

The models check one file on its own: types, ranges, enumerations and keys
that must go together. Whether a referenced template or employee exists is
checked against the database by the apply functions.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from shared import templating
from shared.errors import ConfigError
from shared.ratelimit import parse_rate

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]*")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXTENSION = re.compile(r"\.[a-z0-9][a-z0-9._-]*")

MIN_TIMEOUT, MAX_TIMEOUT = 60, 600


def problem(field: str, message: str) -> PydanticCustomError:
    """An error about a key of the model being validated, for `files`."""
    return PydanticCustomError(
        "config", "{field}: {message}", {"field": field, "message": message}
    )


def _id(value: str) -> str:
    if len(value) > 100 or not _ID.fullmatch(value):
        raise ValueError(
            "must be 1-100 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return value


def _address(value: str) -> str:
    try:
        # Internal and test domains (mail.internal, example.test) are fine
        # for a system mailbox; only the syntax is checked, never DNS.
        checked = validate_email(
            value,
            check_deliverability=False,
            globally_deliverable=False,
            test_environment=True,
        )
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from exc
    return checked.normalized


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("must be 1..65535")
    return value


def _positive(value: int) -> int:
    if value <= 0:
        raise ValueError("must be more than 0")
    return value


def _not_negative(value: int) -> int:
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _timeout(value: int) -> int:
    if not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        raise ValueError(
            f"must be {MIN_TIMEOUT}..{MAX_TIMEOUT} seconds (1 to 10 minutes)"
        )
    return value


def _env_name(value: str) -> str:
    if not _ENV.fullmatch(value):
        raise ValueError("must be the name of an environment variable")
    return value


def _rate_limit(value: str) -> str:
    # The sender reads it with the same parser, so what passes here works there.
    try:
        parse_rate(value)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    return value


def _extension(value: str) -> str:
    value = value.strip().lower()
    if not value.startswith("."):
        value = "." + value
    if len(value) > 20 or not _EXTENSION.fullmatch(value):
        raise ValueError(f"{value!r} is not a file extension like .pdf")
    return value


def _one_line(limit: int) -> AfterValidator:
    def check(value: str) -> str:
        if len(value) > limit:
            raise ValueError(f"must be at most {limit} characters")
        if any(c in value for c in "\r\n\0"):
            raise ValueError("must be a single line")
        return value

    return AfterValidator(check)


def _template_source(value: str) -> str:
    try:
        templating.check(value)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    return value


Id = Annotated[str, AfterValidator(_id)]
Address = Annotated[str, AfterValidator(_address)]
Port = Annotated[int, AfterValidator(_port)]
Seconds = Annotated[int, AfterValidator(_positive)]
Host = Annotated[str, _one_line(255)]
Login = Annotated[str, _one_line(320)]
EnvName = Annotated[str, AfterValidator(_env_name)]
Name = Annotated[str, _one_line(200)]
TemplateText = Annotated[str, AfterValidator(_template_source)]
Encryption = Literal["ssl", "starttls", "none"]


def default_incoming_port(protocol: str, encryption: str) -> int:
    secure = encryption == "ssl"
    if protocol == "imap":
        return 993 if secure else 143
    return 995 if secure else 110


def default_outgoing_port(encryption: str) -> int:
    return {"ssl": 465, "starttls": 587}.get(encryption, 25)


class Strict(BaseModel):
    # Strict: YAML already gives ints, bools and strings, so `port: "993"`
    # or `active: 1` is a mistake worth reporting, not a value to coerce.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Incoming(Strict):
    protocol: Literal["imap", "pop3", "none"] = "none"
    host: Host | None = None
    port: Port | None = None
    encryption: Encryption = "ssl"
    root_folder: Annotated[str, _one_line(255)] | None = None
    username: Login | None = None
    password_env: EnvName | None = None
    after_receive: Literal["mark_read", "leave", "delete"] | None = None
    poll_interval: Seconds = 300
    verify_tls: bool = True

    @model_validator(mode="after")
    def _server_keys_fit_protocol(self) -> Incoming:
        if self.protocol == "none":
            for key in ("host", "port", "root_folder", "username", "password_env"):
                if getattr(self, key) is not None:
                    raise problem(key, "not used when protocol is none")
            return self
        if self.host is None:
            raise problem("host", f"required for {self.protocol}")
        if self.username is None:
            raise problem("username", f"required for {self.protocol}")
        if self.protocol == "imap" and not self.root_folder:
            raise problem("root_folder", "required for imap (e.g. INBOX)")
        if self.protocol == "pop3" and self.root_folder is not None:
            raise problem("root_folder", "only for imap; POP3 has no folders")
        if self.protocol == "pop3" and self.after_receive == "mark_read":
            raise problem("after_receive", "POP3 cannot mark read; use leave or delete")
        return self

    @property
    def resolved_port(self) -> int | None:
        if self.protocol == "none":
            return None
        return self.port or default_incoming_port(self.protocol, self.encryption)

    @property
    def resolved_after_receive(self) -> str:
        if self.after_receive is not None:
            return self.after_receive
        return "leave" if self.protocol == "pop3" else "mark_read"


class Outgoing(Strict):
    host: Host
    port: Port | None = None
    encryption: Encryption = "starttls"
    auth: Literal["none", "incoming", "custom"] = "none"
    username: Login | None = None
    password_env: EnvName | None = None
    validates_from: bool = False
    batch_size: Annotated[int, AfterValidator(_not_negative)] = 0
    rate_limit: Annotated[str, AfterValidator(_rate_limit)] | None = None
    verify_tls: bool = True

    @model_validator(mode="after")
    def _login_fits_auth(self) -> Outgoing:
        if self.auth == "custom" and self.username is None:
            raise problem("username", "required when auth is custom")
        if self.auth != "custom":
            for key in ("username", "password_env"):
                if getattr(self, key) is not None:
                    raise problem(key, "only used when auth is custom")
        return self

    @property
    def resolved_port(self) -> int:
        return self.port or default_outgoing_port(self.encryption)


class Attachments(Strict):
    allowed: bool = True
    # Empty: every type is allowed.
    types: list[Annotated[str, AfterValidator(_extension)]] = []
    max_bytes: Seconds | None = None


class Processing(Strict):
    active: bool = False
    confirm_receipt: Id | None = None
    create_case: bool = False
    attach_to_contact: bool = False
    create_lead: bool = False
    route_to_owner: bool = False
    reply_unassigned: Id | None = None
    delete_processed: Literal[
        "never", "always", "if_none_succeeded", "if_any_succeeded"
    ] = "never"
    add_source_info: bool = False


class Assignment(Strict):
    map: Id | None = None
    default_owner: Id | None = None
    default_workgroup: Annotated[str, _one_line(100)] | None = None


class AccountSpec(Strict):
    id: Id
    address: Address
    display_name: Name = ""
    reply_address: Address | None = None
    active: bool = True
    # None leaves the installation's default account as it is.
    default: bool | None = None
    timeout: Annotated[int, AfterValidator(_timeout)] = 60
    incoming: Incoming = Incoming()
    outgoing: Outgoing | None = None
    attachments: Attachments = Attachments()
    processing: Processing = Processing()
    assignment: Assignment = Assignment()

    @model_validator(mode="after")
    def _parts_fit_together(self) -> AccountSpec:
        receives = self.incoming.protocol != "none"
        if self.outgoing and self.outgoing.auth == "incoming" and not receives:
            raise problem("outgoing.auth", "incoming needs an incoming server")
        if self.processing.active and not receives:
            raise problem("processing.active", "needs an incoming server")
        if self.outgoing is None:
            replies = {
                "processing.confirm_receipt": self.processing.confirm_receipt,
                "processing.reply_unassigned": self.processing.reply_unassigned,
                "processing.route_to_owner": self.processing.route_to_owner or None,
            }
            for key, value in replies.items():
                if value is not None:
                    raise problem(key, "sends mail: needs an outgoing server")
        return self


class AccountsFile(Strict):
    accounts: list[AccountSpec] = []


class TemplateSpec(Strict):
    id: Id
    subject: TemplateText
    text: TemplateText
    html: TemplateText | None = None


class TemplatesFile(Strict):
    templates: list[TemplateSpec] = []


class EmployeeSpec(Strict):
    id: Id
    name: Name
    email: Address
    active: bool = True


class UserSpec(Strict):
    id: Id
    email: Address
    name: Name = ""
    default_account: Id | None = None


class BusinessAccountSpec(Strict):
    id: Id
    name: Name
    email: Address | None = None


Scalar = str | int | float | bool | None


class ContactSpec(Strict):
    id: Id
    name: Name = ""
    email: Address | None = None
    business_account: Id | None = None
    opted_out: bool = False
    # More values a template may use, e.g. {{ contact.city }}.
    fields: dict[str, Any] = {}

    @model_validator(mode="after")
    def _fields_are_plain(self) -> ContactSpec:
        for key, value in self.fields.items():
            if not isinstance(value, Scalar):
                raise problem(f"fields.{key}", "must be text, a number or true/false")
        return self


class When(Strict):
    from_address: Address | None = None
    from_domain: Host | None = None
    to_address: Address | None = None
    subject_contains: Annotated[str, _one_line(320)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> When:
        given = [k for k, v in self.model_dump().items() if v is not None]
        if len(given) != 1:
            raise ValueError(
                "needs exactly one of from_address, from_domain, to_address, "
                "subject_contains"
            )
        if self.from_domain is not None:
            domain = self.from_domain.strip().lstrip("@").lower()
            if not domain or " " in domain:
                raise problem("from_domain", "must be a domain like example.com")
            object.__setattr__(self, "from_domain", domain)
        if self.subject_contains is not None and not self.subject_contains.strip():
            raise problem("subject_contains", "must not be empty")
        return self

    @property
    def condition(self) -> tuple[str, str]:
        for key, value in self.model_dump().items():
            if value is not None:
                return key, str(value)
        raise AssertionError("validated to hold one condition")


class RuleSpec(Strict):
    when: When
    owner: Id


class AssignmentMapSpec(Strict):
    id: Id
    rules: list[RuleSpec] = []


class DirectoryFile(Strict):
    employees: list[EmployeeSpec] = []
    users: list[UserSpec] = []
    business_accounts: list[BusinessAccountSpec] = []
    contacts: list[ContactSpec] = []
    assignment_maps: list[AssignmentMapSpec] = []
