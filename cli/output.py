"""How commands print (tables for people, JSON for programs), and the
options several commands share."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any, TypeVar

import click

from shared.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)


def at_option(fn: F) -> F:
    """``--at``: when to send, read by ``parse_at``."""
    return click.option(
        "--at",
        "at_text",
        metavar="ISO-8601",
        help=(
            "Send at this time, not now. Without a zone (2026-12-24T09:00) it "
            "is this machine's local time; with one (+01:00, Z), that zone's."
        ),
    )(fn)


def parse_at(value: str | None) -> datetime | None:
    """The time given to ``--at``; one without a zone is this machine's
    local time, as a person reading a clock means it."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ConfigError(f"--at {value!r} is not an ISO-8601 time") from exc
    # astimezone() reads a time without a zone as local time.
    return moment if moment.tzinfo else moment.astimezone()


def _default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, set | tuple):
        return list(value)
    raise TypeError(f"cannot print {type(value).__name__} as JSON")


def print_json(data: object) -> None:
    click.echo(json.dumps(data, default=_default, indent=2, sort_keys=False))


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    click.echo(
        "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))
    )
    for r in cells:
        click.echo(
            "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
        )


def print_record(record: dict[str, Any]) -> None:
    width = max(len(k) for k in record) if record else 0
    for key, value in record.items():
        click.echo(f"{key.ljust(width)}  {_cell(value)}")


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def emit(
    data: Sequence[dict[str, Any]] | dict[str, Any],
    as_json: bool,
    columns: Sequence[str] = (),
) -> None:
    """Print a list as a table or one record as lines, or either as JSON."""
    if as_json:
        print_json(data)
    elif isinstance(data, dict):
        print_record(data)
    else:
        print_table(data, columns)
