"""`sysmail accounts apply/list/show/delete` on the real database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from sqlalchemy import text

from cli.main import cli
from shared import crypto
from shared.db import session_scope

PASSWORD = "s3cret-Imap-passw0rd"
SMTP_PASSWORD = "another-Smtp-passw0rd"

TEMPLATES = {
    "templates": [
        {"id": "ack", "subject": "Received: {{ subject }}", "text": "Thanks."},
        {"id": "unassigned", "subject": "Re: {{ subject }}", "text": "Noted."},
    ]
}
DIRECTORY = {
    "employees": [{"id": "alice", "name": "Alice", "email": "alice@example.test"}],
    "assignment_maps": [
        {
            "id": "support-map",
            "rules": [{"when": {"from_domain": "big.test"}, "owner": "alice"}],
        }
    ],
}
SUPPORT_YAML = """
accounts:
  - id: support
    address: support@example.test
    display_name: Support
    reply_address: noreply@example.test
    active: true
    incoming: {protocol: imap, host: 127.0.0.1, port: 993, encryption: ssl,
               root_folder: INBOX, username: support@example.test,
               password_env: SUPPORT_PASSWORD, after_receive: mark_read,
               poll_interval: 60, verify_tls: true}
    outgoing: {host: 127.0.0.1, port: 587, encryption: starttls, auth: incoming,
               username: null, password_env: null, validates_from: false,
               batch_size: 0, rate_limit: 30/min, verify_tls: true}
    attachments: {allowed: true, types: [.pdf, .png], max_bytes: 10485760}
    processing: {active: true, confirm_receipt: ack, create_case: true,
                 attach_to_contact: true, create_lead: true, route_to_owner: true,
                 reply_unassigned: unassigned, delete_processed: never,
                 add_source_info: true}
    assignment: {map: support-map, default_owner: alice}
"""


def sales(**changes: Any) -> dict[str, Any]:
    account: dict[str, Any] = {
        "id": "sales",
        "address": "sales@example.test",
        "outgoing": {"host": "127.0.0.1", "encryption": "ssl"},
    }
    account.update(changes)
    return account


def sysmail(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def write(path: Path, content: dict[str, Any] | str) -> str:
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return str(path)


def show(account_id: str) -> dict[str, Any]:
    result = sysmail("accounts", "show", account_id, "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def snapshot() -> list[tuple[Any, ...]]:
    """Every stored account and preference, raw, to compare before and after."""
    with session_scope() as session:
        rows = session.execute(text("SELECT * FROM accounts ORDER BY id")).all()
        prefs = session.execute(text("SELECT * FROM preferences")).all()
    return [tuple(r) for r in rows] + [tuple(p) for p in prefs]


@pytest.fixture(autouse=True)
def references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Templates, an employee and a map the example account refers to."""
    monkeypatch.setenv("SUPPORT_PASSWORD", PASSWORD)
    result = sysmail("templates", "apply", write(tmp_path / "t.yaml", TEMPLATES))
    assert result.exit_code == 0, result.output
    result = sysmail("directory", "apply", write(tmp_path / "d.yaml", DIRECTORY))
    assert result.exit_code == 0, result.output


def test_apply_creates_the_issue_example_account(tmp_path: Path) -> None:
    result = sysmail("accounts", "apply", write(tmp_path / "a.yaml", SUPPORT_YAML))

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "1 account created, 0 updated"
    account = show("support")
    assert account["incoming"]["protocol"] == "imap"
    assert account["incoming"]["port"] == 993
    assert account["incoming"]["password"] == "set"
    assert account["outgoing"]["rate_limit"] == "30/min"
    assert account["outgoing"]["auth"] == "incoming"
    assert account["processing"]["confirm_receipt"] == "ack"
    assert account["assignment"] == {
        "map": "support-map",
        "default_owner": "alice",
        "default_workgroup": None,
    }


def test_reapplying_updates_declared_accounts_and_leaves_others_alone(
    tmp_path: Path,
) -> None:
    sysmail("accounts", "apply", write(tmp_path / "a.yaml", SUPPORT_YAML))
    sysmail("accounts", "apply", write(tmp_path / "s.yaml", {"accounts": [sales()]}))
    support_before = show("support")

    changed = sales(display_name="Sales team", timeout=120)
    result = sysmail(
        "accounts", "apply", write(tmp_path / "s.yaml", {"accounts": [changed]})
    )

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "0 accounts created, 1 updated"
    assert show("sales")["display_name"] == "Sales team"
    assert show("sales")["timeout"] == 120
    assert show("support") == support_before


def test_ports_left_out_get_the_protocol_defaults(tmp_path: Path) -> None:
    account = sales(
        incoming={
            "protocol": "pop3",
            "host": "127.0.0.1",
            "encryption": "starttls",
            "username": "sales",
            "password_env": "SUPPORT_PASSWORD",
        }
    )

    sysmail("accounts", "apply", write(tmp_path / "s.yaml", {"accounts": [account]}))

    assert show("sales")["incoming"]["port"] == 110
    assert show("sales")["outgoing"]["port"] == 465


def test_a_bad_file_is_rejected_whole_and_changes_nothing(tmp_path: Path) -> None:
    sysmail("accounts", "apply", write(tmp_path / "a.yaml", SUPPORT_YAML))
    before = snapshot()
    bad = yaml.safe_load(SUPPORT_YAML)
    bad["accounts"][0]["display_name"] = "Changed"
    bad["accounts"].append(sales(default=True))
    bad["accounts"].append(sales(id="other", outgoing={"host": "h", "port": 0}))

    result = sysmail("accounts", "apply", write(tmp_path / "accounts.yaml", bad))

    assert result.exit_code == 1
    assert result.stderr == (
        "sysmail: error: accounts.yaml: accounts[2] (other): outgoing.port: "
        "must be 1..65535\n"
    )
    assert result.stdout == ""
    assert snapshot() == before


def test_a_missing_reference_is_rejected_and_changes_nothing(tmp_path: Path) -> None:
    before = snapshot()
    content = yaml.safe_load(
        SUPPORT_YAML.replace("confirm_receipt: ack", "confirm_receipt: nope")
    )
    content["accounts"].insert(0, sales())

    result = sysmail("accounts", "apply", write(tmp_path / "accounts.yaml", content))

    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "sysmail: error: accounts.yaml: accounts[1] (support): "
        "processing.confirm_receipt: template nope does not exist"
    )
    assert snapshot() == before


def test_files_must_go_in_in_the_order_their_references_need(tmp_path: Path) -> None:
    content = SUPPORT_YAML.replace("default_owner: alice", "default_owner: bob")
    bob = {"employees": [{"id": "bob", "name": "Bob", "email": "bob@example.test"}]}

    first = sysmail("accounts", "apply", write(tmp_path / "a.yaml", content))
    sysmail("directory", "apply", write(tmp_path / "bob.yaml", bob))
    second = sysmail("accounts", "apply", write(tmp_path / "a.yaml", content))

    assert first.exit_code == 1
    assert "assignment.default_owner: employee bob does not exist" in first.stderr
    assert second.exit_code == 0, second.output


def test_password_is_stored_encrypted_never_in_clear(tmp_path: Path) -> None:
    custom = sales(
        outgoing={
            "host": "127.0.0.1",
            "auth": "custom",
            "username": "sales",
            "password_env": "SMTP_PASSWORD",
        }
    )
    runner = CliRunner(env={"SMTP_PASSWORD": SMTP_PASSWORD})
    sysmail("accounts", "apply", write(tmp_path / "a.yaml", SUPPORT_YAML))
    runner.invoke(
        cli, ["accounts", "apply", write(tmp_path / "s.yaml", {"accounts": [custom]})]
    )

    with session_scope() as session:
        rows = session.execute(
            text("SELECT id, incoming_password, outgoing_password FROM accounts")
        ).all()
        everything = session.execute(text("SELECT accounts::text FROM accounts"))
        as_text = "\n".join(everything.scalars())
    tokens = {row.id: (row.incoming_password, row.outgoing_password) for row in rows}

    assert PASSWORD not in as_text and SMTP_PASSWORD not in as_text
    assert PASSWORD.encode() not in bytes(tokens["support"][0])
    assert crypto.decrypt(bytes(tokens["support"][0])) == PASSWORD
    assert crypto.decrypt(bytes(tokens["sales"][1])) == SMTP_PASSWORD


def test_no_command_prints_the_password(tmp_path: Path) -> None:
    sysmail("accounts", "apply", write(tmp_path / "a.yaml", SUPPORT_YAML))

    outputs = [
        sysmail("accounts", "show", "support").output,
        sysmail("accounts", "show", "support", "--json").output,
        sysmail("accounts", "list").output,
        sysmail("accounts", "list", "--json").output,
    ]

    assert all(PASSWORD not in output for output in outputs)
    assert "password: set" in outputs[0]


def test_reapplying_without_password_env_keeps_the_stored_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sysmail("accounts", "apply", write(tmp_path / "a.yaml", SUPPORT_YAML))
    monkeypatch.delenv("SUPPORT_PASSWORD")
    content = SUPPORT_YAML.replace("password_env: SUPPORT_PASSWORD,", "")

    result = sysmail("accounts", "apply", write(tmp_path / "a.yaml", content))

    assert result.exit_code == 0, result.output
    with session_scope() as session:
        token = session.execute(
            text("SELECT incoming_password FROM accounts WHERE id = 'support'")
        ).scalar_one()
    assert crypto.decrypt(bytes(token)) == PASSWORD


def test_password_env_naming_an_unset_variable_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUPPORT_PASSWORD")

    result = sysmail("accounts", "apply", write(tmp_path / "a.yaml", SUPPORT_YAML))

    assert result.exit_code == 1
    assert result.stderr.strip().endswith(
        "accounts[0] (support): incoming.password_env: "
        "environment variable SUPPORT_PASSWORD is not set or empty"
    )
    assert snapshot() == []


def test_a_login_without_any_password_is_rejected_when_no_one_can_type_it(
    tmp_path: Path,
) -> None:
    content = SUPPORT_YAML.replace("password_env: SUPPORT_PASSWORD,", "")

    result = sysmail("accounts", "apply", write(tmp_path / "a.yaml", content))

    assert result.exit_code == 1
    assert "incoming.password_env: no password stored" in result.stderr
    assert snapshot() == []


def test_a_login_without_any_password_is_asked_for_at_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cli.accounts._interactive", lambda: True)
    content = SUPPORT_YAML.replace("password_env: SUPPORT_PASSWORD,", "")

    result = sysmail(
        "accounts", "apply", write(tmp_path / "a.yaml", content), input="typed-pw\n"
    )

    assert result.exit_code == 0, result.output
    assert "typed-pw" not in result.output
    with session_scope() as session:
        token = session.execute(
            text("SELECT incoming_password FROM accounts WHERE id = 'support'")
        ).scalar_one()
    assert crypto.decrypt(bytes(token)) == "typed-pw"


def test_default_true_makes_the_account_the_installation_default(
    tmp_path: Path,
) -> None:
    result = sysmail(
        "accounts",
        "apply",
        write(tmp_path / "s.yaml", {"accounts": [sales(default=True)]}),
    )

    assert result.exit_code == 0, result.output
    assert show("sales")["default"] is True
    prefs = json.loads(sysmail("preferences", "show", "--json").stdout)
    assert prefs["default_account"] == "sales"


def test_two_default_accounts_in_one_file_are_rejected(tmp_path: Path) -> None:
    both = [sales(default=True), sales(id="billing", default=True)]

    result = sysmail(
        "accounts", "apply", write(tmp_path / "a.yaml", {"accounts": both})
    )

    assert result.exit_code == 1
    assert "accounts[1] (billing): default: a second default account" in result.stderr
    assert snapshot() == []


def test_a_second_default_beside_the_stored_one_is_rejected(tmp_path: Path) -> None:
    sysmail(
        "accounts",
        "apply",
        write(tmp_path / "s.yaml", {"accounts": [sales(default=True)]}),
    )
    before = snapshot()
    billing = {"accounts": [sales(id="billing", default=True)]}

    rejected = sysmail("accounts", "apply", write(tmp_path / "b.yaml", billing))
    both = {"accounts": [sales(default=False), sales(id="billing", default=True)]}
    moved = sysmail("accounts", "apply", write(tmp_path / "m.yaml", both))

    assert rejected.exit_code == 1
    assert "default: a second default account; sales is the default" in rejected.stderr
    assert moved.exit_code == 0, moved.output
    assert show("billing")["default"] is True
    assert show("sales")["default"] is False
    assert before != snapshot()


def test_list_shows_every_account(tmp_path: Path) -> None:
    sysmail("accounts", "apply", write(tmp_path / "a.yaml", SUPPORT_YAML))
    sysmail("accounts", "apply", write(tmp_path / "s.yaml", {"accounts": [sales()]}))

    rows = json.loads(sysmail("accounts", "list", "--json").stdout)
    table = sysmail("accounts", "list").stdout

    assert [row["id"] for row in rows] == ["sales", "support"]
    assert rows[1]["incoming"] == "imap 127.0.0.1:993"
    assert "support@example.test" in table


def test_delete_refuses_the_default_account_unless_forced(tmp_path: Path) -> None:
    sysmail(
        "accounts",
        "apply",
        write(tmp_path / "s.yaml", {"accounts": [sales(default=True)]}),
    )

    refused = sysmail("accounts", "delete", "sales")
    forced = sysmail("accounts", "delete", "sales", "--force")

    assert refused.exit_code == 1
    assert "account sales is the default account" in refused.stderr
    assert forced.exit_code == 0, forced.output
    assert sysmail("accounts", "show", "sales").exit_code == 1
    prefs = json.loads(sysmail("preferences", "show", "--json").stdout)
    assert prefs["default_account"] is None


def test_delete_of_an_unknown_account_says_so() -> None:
    result = sysmail("accounts", "delete", "ghost")

    assert result.exit_code == 1
    assert result.stderr == "sysmail: error: account ghost does not exist\n"


def test_an_unreadable_file_is_one_clear_line(tmp_path: Path) -> None:
    result = sysmail("accounts", "apply", str(tmp_path / "missing.yaml"))

    assert result.exit_code == 1
    assert result.stderr.startswith("sysmail: error: missing.yaml: cannot be read")
    assert result.stderr.count("\n") == 1
