"""`sysmail demo` shows a newcomer cases created and replies sent within a
minute, then stops cleanly on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy import select

from shared.db import session_scope
from shared.models import Account, Case, Email, Lead
from tests.e2e.conftest import ROOT, wait_until


def test_demo_creates_cases_and_sends_replies_within_a_minute(
    system_env: dict[str, str], tmp_path: Path
) -> None:
    run_dir, log = tmp_path / "demo", tmp_path / "demo.log"
    command = [sys.executable, "-m", "cli.main", "demo", "--run-dir", str(run_dir)]
    # The demo writes its log through its own copy of the file.
    with log.open("w") as stderr:
        demo = subprocess.Popen(
            command,
            cwd=ROOT,
            env=system_env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    output = demo.stdout
    assert output is not None
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(output.readline, "")), daemon=True
    )
    reader.start()

    def replies() -> list[str]:
        got = [x for x in lines if x.startswith("demo mail server got")]
        return got if len(got) >= 3 else []

    try:
        got = wait_until(replies, timeout=60)
    except AssertionError as exc:
        tail = log.read_text()[-3000:]
        raise AssertionError(f"demo printed {lines}; its log ends:\n{tail}") from exc
    finally:
        demo.send_signal(signal.SIGINT)
        code = demo.wait(60)
        reader.join(10)
        output.close()

    assert code == 0
    assert any("to carol@acme.test: We received your message" in x for x in got)
    assert any("to nina@prospect.test: We received your message" in x for x in got)
    with session_scope() as session:
        subjects = set(session.scalars(select(Case.subject)))
        leads = set(session.scalars(select(Lead.email)))
        demo_account = session.get(Account, "demo")
        out_of_office = session.scalars(
            select(Email).where(Email.subject == "Out of office")
        ).one()
    assert {"Question about invoice 2041", "Interested in your product"} <= subjects
    assert "nina@prospect.test" in leads
    assert demo_account is not None and not demo_account.active
    assert out_of_office.is_automatic and out_of_office.case_id is None
