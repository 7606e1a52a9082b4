"""`sysmail directory` and `sysmail templates` apply, list and show."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner, Result
from sqlalchemy import text

from cli.main import cli
from shared.db import session_scope

DIRECTORY: dict[str, Any] = {
    "employees": [
        {"id": "alice", "name": "Alice", "email": "alice@example.test"},
        {"id": "bob", "name": "Bob", "email": "bob@example.test", "active": False},
    ],
    "business_accounts": [
        {"id": "acme", "name": "Acme Ltd", "email": "office@acme.test"}
    ],
    "contacts": [
        {
            "id": "carol",
            "name": "Carol",
            "email": "carol@acme.test",
            "business_account": "acme",
            "fields": {"city": "Graz"},
        },
        {"id": "dave", "name": "Dave", "opted_out": True},
    ],
    "assignment_maps": [
        {
            "id": "support-map",
            "rules": [
                {"when": {"from_domain": "acme.test"}, "owner": "alice"},
                {"when": {"subject_contains": "invoice"}, "owner": "bob"},
            ],
        }
    ],
}


def sysmail(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def write(path: Path, content: dict[str, Any] | str) -> str:
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return str(path)


def listed(kind: str) -> list[dict[str, Any]]:
    result = sysmail("directory", "list", kind, "--json")
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def snapshot() -> dict[str, list[tuple[Any, ...]]]:
    tables = [
        "employees",
        "users",
        "business_accounts",
        "contacts",
        "assignment_maps",
        "assignment_rules",
        "templates",
    ]
    with session_scope() as session:
        return {
            table: [
                tuple(row)
                for row in session.execute(text(f"SELECT * FROM {table} ORDER BY 1"))
            ]
            for table in tables
        }


def test_directory_apply_creates_every_kind(tmp_path: Path) -> None:
    result = sysmail("directory", "apply", write(tmp_path / "d.yaml", DIRECTORY))

    assert result.exit_code == 0, result.output
    assert "2 employees created, 0 updated" in result.stdout
    assert "1 assignment map created, 0 updated" in result.stdout
    assert [e["id"] for e in listed("employees")] == ["alice", "bob"]
    assert listed("employees")[1]["active"] is False
    assert listed("business-accounts")[0]["name"] == "Acme Ltd"
    carol = listed("contacts")[0]
    assert carol["business_account"] == "acme"
    assert carol["fields"] == {"city": "Graz"}
    assert listed("contacts")[1]["opted_out"] is True
    assert listed("assignment-maps")[0]["rules"] == [
        {"when": {"from_domain": "acme.test"}, "owner": "alice"},
        {"when": {"subject_contains": "invoice"}, "owner": "bob"},
    ]


def test_reapplying_replaces_map_rules_and_keeps_other_records(
    tmp_path: Path,
) -> None:
    sysmail("directory", "apply", write(tmp_path / "d.yaml", DIRECTORY))
    with session_scope() as session:
        session.execute(text("UPDATE contacts SET bounced = true WHERE id = 'carol'"))
    changed = {
        "assignment_maps": [
            {
                "id": "support-map",
                "rules": [{"when": {"to_address": "vip@x.test"}, "owner": "bob"}],
            }
        ],
        "contacts": [{"id": "carol", "name": "Carol B", "email": "carol@acme.test"}],
    }

    result = sysmail("directory", "apply", write(tmp_path / "c.yaml", changed))

    assert result.exit_code == 0, result.output
    assert listed("assignment-maps")[0]["rules"] == [
        {"when": {"to_address": "vip@x.test"}, "owner": "bob"}
    ]
    carol = listed("contacts")[0]
    assert carol["name"] == "Carol B"
    # Bounces are learnt from mail, not configured: a re-apply keeps them.
    assert carol["bounced"] is True
    assert [e["id"] for e in listed("employees")] == ["alice", "bob"]


def test_unknown_rule_owner_rejects_the_whole_file(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(DIRECTORY))
    bad["assignment_maps"][0]["rules"][1]["owner"] = "zoe"
    before = snapshot()

    result = sysmail("directory", "apply", write(tmp_path / "directory.yaml", bad))

    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "sysmail: error: directory.yaml: assignment_maps[0] (support-map): "
        "rules[1].owner: employee zoe does not exist"
    )
    assert snapshot() == before


def test_references_may_point_to_records_applied_earlier(tmp_path: Path) -> None:
    sysmail("directory", "apply", write(tmp_path / "d.yaml", DIRECTORY))
    later = {
        "contacts": [{"id": "erin", "business_account": "acme"}],
        "assignment_maps": [
            {"id": "m2", "rules": [{"when": {"from_domain": "b.test"}, "owner": "bob"}]}
        ],
    }

    result = sysmail("directory", "apply", write(tmp_path / "later.yaml", later))

    assert result.exit_code == 0, result.output


def test_user_default_account_must_exist(tmp_path: Path) -> None:
    users = {
        "users": [{"id": "u1", "email": "u1@example.test", "default_account": "x"}]
    }

    result = sysmail("directory", "apply", write(tmp_path / "users.yaml", users))

    assert result.exit_code == 1
    assert "users[0] (u1): default_account: account x does not exist" in result.stderr
    assert listed("users") == []


def test_contact_business_account_must_exist(tmp_path: Path) -> None:
    contacts = {"contacts": [{"id": "c", "business_account": "nobody"}]}

    result = sysmail("directory", "apply", write(tmp_path / "c.yaml", contacts))

    assert result.exit_code == 1
    assert "business_account: business account nobody does not exist" in result.stderr


def test_templates_apply_list_and_show(tmp_path: Path) -> None:
    templates = {
        "templates": [
            {
                "id": "ack",
                "subject": "Received: {{ subject }}",
                "text": "Thanks {{ name }}.",
                "html": "<p>Thanks {{ name }}.</p>",
            }
        ]
    }

    created = sysmail("templates", "apply", write(tmp_path / "t.yaml", templates))
    templates["templates"][0]["text"] = "Thank you."
    updated = sysmail("templates", "apply", write(tmp_path / "t.yaml", templates))
    shown = json.loads(sysmail("templates", "show", "ack", "--json").stdout)
    listed_ = json.loads(sysmail("templates", "list", "--json").stdout)

    assert created.stdout.strip() == "1 template created, 0 updated"
    assert updated.stdout.strip() == "0 templates created, 1 updated"
    assert shown["text"] == "Thank you."
    assert shown["html"] == "<p>Thanks {{ name }}.</p>"
    assert listed_ == [
        {"id": "ack", "subject": "Received: {{ subject }}", "html": True}
    ]


def test_templates_apply_leaves_templates_the_file_does_not_name_alone(
    tmp_path: Path,
) -> None:
    first = {
        "templates": [
            {"id": "ack", "subject": "Received", "text": "Thanks."},
            {"id": "bye", "subject": "Closed", "text": "Goodbye {{ name }}."},
        ]
    }
    second = {"templates": [{"id": "ack", "subject": "Got it", "text": "Thank you."}]}
    sysmail("templates", "apply", write(tmp_path / "first.yaml", first))

    result = sysmail("templates", "apply", write(tmp_path / "second.yaml", second))

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "0 templates created, 1 updated"
    bye = json.loads(sysmail("templates", "show", "bye", "--json").stdout)
    assert (bye["subject"], bye["text"]) == ("Closed", "Goodbye {{ name }}.")
    listed_ = json.loads(sysmail("templates", "list", "--json").stdout)
    assert [t["id"] for t in listed_] == ["ack", "bye"]


def test_a_template_with_a_syntax_error_is_rejected_with_its_line(
    tmp_path: Path,
) -> None:
    content = """
templates:
  - id: good
    subject: Fine
    text: Fine
  - id: broken
    subject: Hello
    text: |
      Dear {{ name }},
      {% if case %}your case{% endfor %}
"""
    before = snapshot()

    result = sysmail("templates", "apply", write(tmp_path / "templates.yaml", content))

    assert result.exit_code == 1
    assert result.stderr.startswith(
        "sysmail: error: templates.yaml: templates[1] (broken): text: line 2: "
    )
    assert snapshot() == before


def test_show_of_an_unknown_template_says_so() -> None:
    result = sysmail("templates", "show", "ghost")

    assert result.exit_code == 1
    assert result.stderr == "sysmail: error: template ghost does not exist\n"
