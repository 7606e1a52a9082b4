"""Configuration files: each kind of mistake gets one line naming item and key."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from shared.configfiles import parse_text
from shared.configfiles.files import validate
from shared.configfiles.references import check_unique
from shared.configfiles.schema import (
    AccountsFile,
    DirectoryFile,
    TemplatesFile,
)
from shared.errors import ConfigError

SUPPORT: dict[str, Any] = {
    "id": "support",
    "address": "support@example.test",
    "display_name": "Support",
    "reply_address": "noreply@example.test",
    "active": True,
    "incoming": {
        "protocol": "imap",
        "host": "127.0.0.1",
        "port": 993,
        "encryption": "ssl",
        "root_folder": "INBOX",
        "username": "support@example.test",
        "password_env": "SUPPORT_PASSWORD",
        "after_receive": "mark_read",
        "poll_interval": 60,
        "verify_tls": True,
    },
    "outgoing": {
        "host": "127.0.0.1",
        "port": 587,
        "encryption": "starttls",
        "auth": "incoming",
        "username": None,
        "password_env": None,
        "validates_from": False,
        "batch_size": 0,
        "rate_limit": "30/min",
        "verify_tls": True,
    },
    "attachments": {"allowed": True, "types": [".pdf", ".png"], "max_bytes": 10485760},
    "processing": {
        "active": True,
        "confirm_receipt": "ack",
        "create_case": True,
        "attach_to_contact": True,
        "create_lead": True,
        "route_to_owner": True,
        "reply_unassigned": "unassigned",
        "delete_processed": "never",
        "add_source_info": True,
    },
    "assignment": {"map": "support-map", "default_owner": "alice"},
}


def accounts_file(**changes: Any) -> AccountsFile:
    """The issue's example account with some keys changed ("a.b" nests)."""
    account = copy.deepcopy(SUPPORT)
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        target = account
        for parent in parents:
            target = target[parent]
        if value is _DROP:
            target.pop(key, None)
        else:
            target[key] = value
    text = yaml.safe_dump({"accounts": [account]})
    return validate(parse_text(text, "accounts.yaml"), AccountsFile)


_DROP = object()


def rejected(**changes: Any) -> str:
    with pytest.raises(ConfigError) as error:
        accounts_file(**changes)
    return str(error.value)


def test_the_issue_example_account_is_accepted() -> None:
    account = accounts_file().accounts[0]

    assert account.incoming.resolved_port == 993
    assert account.outgoing is not None and account.outgoing.rate_limit == "30/min"
    assert account.attachments.types == [".pdf", ".png"]


def test_bad_port_names_file_item_and_field() -> None:
    assert rejected(**{"incoming.port": 70000}) == (
        "accounts.yaml: accounts[0] (support): incoming.port: must be 1..65535"
    )


def test_unknown_key_is_an_error() -> None:
    assert rejected(**{"incoming.hots": "x"}).endswith("incoming.hots: unknown key")


def test_unknown_protocol_lists_the_allowed_ones() -> None:
    message = rejected(**{"incoming.protocol": "smtp"})

    assert "incoming.protocol: must be 'imap', 'pop3' or 'none'" in message


def test_invalid_address_is_an_error() -> None:
    message = rejected(address="support@@example.test")

    assert "accounts[0] (support): address: not a valid email address" in message


def test_imap_without_root_folder_is_an_error() -> None:
    message = rejected(**{"incoming.root_folder": _DROP})

    assert message.endswith("incoming.root_folder: required for imap (e.g. INBOX)")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("incoming.encryption", "tls", "must be 'ssl', 'starttls' or 'none'"),
        ("outgoing.auth", "oauth", "must be 'none', 'incoming' or 'custom'"),
        ("incoming.after_receive", "archive", "'mark_read', 'leave' or 'delete'"),
        ("processing.delete_processed", "sometimes", "'never', 'always'"),
        ("outgoing.rate_limit", "30/day", "is not like 30/min"),
        ("outgoing.rate_limit", "0/min", "is not like 30/min"),
        ("incoming.poll_interval", 0, "must be more than 0"),
        ("timeout", 30, "must be 60..600 seconds"),
        ("timeout", 601, "must be 60..600 seconds"),
        ("outgoing.batch_size", -1, "must be 0 or more"),
        ("incoming.port", "993", "must be a whole number"),
        ("active", "yes", "must be true or false"),
        ("id", "has space", "must be 1-100 letters"),
        ("incoming.password_env", "NOT-A-NAME", "name of an environment variable"),
    ],
)
def test_each_bad_value_gets_its_clear_message(
    key: str, value: object, expected: str
) -> None:
    message = rejected(**{key: value})

    item = "has space" if key == "id" else "support"
    assert f"accounts[0] ({item}): {key}: " in message
    assert expected in message


def test_missing_address_is_required() -> None:
    assert rejected(address=_DROP).endswith("accounts[0] (support): address: required")


def test_pop3_account_cannot_mark_read_or_have_a_root_folder() -> None:
    pop3 = {"incoming.protocol": "pop3", "incoming.after_receive": _DROP}
    assert "only for imap" in rejected(**pop3)
    marks_read = {**pop3, "incoming.after_receive": "mark_read"}
    assert "POP3 cannot mark read" in rejected(
        **marks_read, **{"incoming.root_folder": _DROP}
    )


def test_pop3_account_leaves_mail_on_the_server_by_default() -> None:
    account = accounts_file(
        **{
            "incoming.protocol": "pop3",
            "incoming.root_folder": _DROP,
            "incoming.after_receive": _DROP,
            "incoming.port": _DROP,
        }
    ).accounts[0]

    assert account.incoming.resolved_after_receive == "leave"
    assert account.incoming.resolved_port == 995


@pytest.mark.parametrize(
    ("protocol", "encryption", "port"),
    [("imap", "ssl", 993), ("imap", "starttls", 143), ("imap", "none", 143)],
)
def test_incoming_port_defaults_by_protocol_and_encryption(
    protocol: str, encryption: str, port: int
) -> None:
    account = accounts_file(
        **{"incoming.encryption": encryption, "incoming.port": _DROP}
    ).accounts[0]

    assert account.incoming.resolved_port == port


@pytest.mark.parametrize(
    ("encryption", "port"), [("ssl", 465), ("starttls", 587), ("none", 25)]
)
def test_outgoing_port_defaults_by_encryption(encryption: str, port: int) -> None:
    account = accounts_file(
        **{"outgoing.encryption": encryption, "outgoing.port": _DROP}
    ).accounts[0]

    assert account.outgoing is not None
    assert account.outgoing.resolved_port == port


def test_send_only_account_cannot_process_or_reuse_incoming_login() -> None:
    send_only = {
        "incoming": {"protocol": "none"},
        "processing.active": False,
        "processing.confirm_receipt": None,
        "processing.reply_unassigned": None,
    }
    assert accounts_file(**send_only, **{"outgoing.auth": "none"}).accounts
    assert "outgoing.auth: incoming needs an incoming server" in rejected(**send_only)
    processing = {**send_only, "processing.active": True}
    assert "processing.active: needs an incoming server" in rejected(
        **processing, **{"outgoing.auth": "none"}
    )


def test_custom_outgoing_login_needs_a_username() -> None:
    message = rejected(**{"outgoing.auth": "custom"})

    assert message.endswith("outgoing.username: required when auth is custom")


def test_account_without_outgoing_server_cannot_send_replies() -> None:
    message = rejected(outgoing=_DROP, **{"processing.route_to_owner": False})

    assert "processing.confirm_receipt: sends mail: needs an outgoing server" in message


def test_several_mistakes_are_counted_on_the_one_line() -> None:
    message = rejected(**{"incoming.port": 0, "outgoing.port": 0})

    assert "(and 1 more error)" in message
    assert "\n" not in message


def test_broken_yaml_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"^accounts.yaml: line 2: "):
        parse_text("accounts:\n  - id: a: b\n", "accounts.yaml")


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_text("- a\n- b\n", "accounts.yaml")


def test_unknown_top_level_key_is_an_error() -> None:
    file = parse_text("acounts: []\n", "accounts.yaml")

    with pytest.raises(ConfigError, match=r"^accounts.yaml: acounts: unknown key$"):
        validate(file, AccountsFile)


def test_an_id_declared_twice_in_a_file_is_an_error() -> None:
    file = parse_text("accounts: [{id: a}, {id: b}, {id: a}]", "accounts.yaml")

    with pytest.raises(ConfigError) as error:
        check_unique(file, "accounts", ["a", "b", "a"])

    assert str(error.value) == (
        "accounts.yaml: accounts[2] (a): id: declared twice in this file "
        "(also accounts[0])"
    )


def test_template_with_a_syntax_error_is_rejected_naming_the_line() -> None:
    file = parse_text(
        'templates:\n  - id: ack\n    subject: Hi\n    text: "a\\n{{ name "\n',
        "templates.yaml",
    )

    with pytest.raises(ConfigError) as error:
        validate(file, TemplatesFile)

    assert str(error.value).startswith(
        "templates.yaml: templates[0] (ack): text: line 2: "
    )


def test_assignment_rule_needs_exactly_one_condition() -> None:
    file = parse_text(
        "assignment_maps:\n"
        "  - id: m\n"
        "    rules:\n"
        "      - {when: {from_domain: a.test}, owner: alice}\n"
        "      - {when: {from_domain: a.test, to_address: b@a.test}, owner: bob}\n",
        "directory.yaml",
    )

    with pytest.raises(ConfigError) as error:
        validate(file, DirectoryFile)

    assert str(error.value).startswith(
        "directory.yaml: assignment_maps[0] (m): rules[1].when: needs exactly one"
    )


def test_assignment_rule_domain_is_normalised() -> None:
    file = parse_text(
        "assignment_maps: [{id: m, rules: [{when: {from_domain: '@Big.Test'}, "
        "owner: alice}]}]",
        "directory.yaml",
    )

    rule = validate(file, DirectoryFile).assignment_maps[0].rules[0]

    assert rule.when.condition == ("from_domain", "big.test")


def test_employee_with_invalid_email_is_rejected() -> None:
    file = parse_text(
        "employees: [{id: alice, name: Alice, email: alice.example.test}]",
        "directory.yaml",
    )

    with pytest.raises(ConfigError, match=r"employees\[0\] \(alice\): email: not a"):
        validate(file, DirectoryFile)


@pytest.mark.parametrize("rate", ["30/min", "5/s", "1000/h"])
def test_rate_limits_per_second_minute_or_hour_are_accepted(rate: str) -> None:
    account = accounts_file(**{"outgoing.rate_limit": rate}).accounts[0]

    assert account.outgoing is not None and account.outgoing.rate_limit == rate
