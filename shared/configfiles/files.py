"""Reading a configuration file and saying in one line what is wrong with it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from shared.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

# pydantic's wording for the errors a hand-written file most often has.
_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required",
    "bool_type": "must be true or false",
    "int_type": "must be a whole number",
    "float_type": "must be a number",
    "string_type": "must be text",
    "list_type": "must be a list",
    "model_type": "must be a mapping of keys and values",
    "dict_type": "must be a mapping of keys and values",
}


@dataclass(frozen=True)
class ConfigFile:
    """A parsed file: its name for messages and its top-level mapping."""

    name: str
    data: Mapping[str, Any]

    def error(self, where: Sequence[str | int], message: str) -> ConfigError:
        """ConfigError for a place in this file, named as the user wrote it."""
        return ConfigError(f"{self.name}: {self.describe(where)}: {message}")

    def describe(self, where: Sequence[str | int]) -> str:
        """`accounts[0] (support): incoming.port` for a path into the data."""
        if len(where) < 2 or not isinstance(where[1], int):
            return _dotted(where) or "(top level)"
        section, index = str(where[0]), where[1]
        item = f"{section}[{index}]"
        item_id = self._item_id(section, index)
        if item_id is not None:
            item += f" ({item_id})"
        rest = _dotted(where[2:])
        return f"{item}: {rest}" if rest else item

    def _item_id(self, section: str, index: int) -> str | None:
        items = self.data.get(section)
        if isinstance(items, list) and 0 <= index < len(items):
            entry = items[index]
            if isinstance(entry, Mapping) and entry.get("id") is not None:
                return str(entry["id"])
        return None


@dataclass
class Tally:
    """How many things of each kind an apply created and updated."""

    counts: dict[str, list[int]] = field(default_factory=dict)

    def add(self, noun: str, created: bool) -> None:
        pair = self.counts.setdefault(noun, [0, 0])
        pair[0 if created else 1] += 1

    def summary(self) -> str:
        if not self.counts:
            return "nothing declared"
        parts = []
        for noun, (created, updated) in self.counts.items():
            name = noun if created == 1 else f"{noun}s"
            parts.append(f"{created} {name} created, {updated} updated")
        return "; ".join(parts)


def read(path: str | Path) -> ConfigFile:
    """Parse a YAML file whose top level is a mapping."""
    name = Path(path).name
    try:
        content = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot be read: {exc}") from exc
    return parse_text(content, name)


def parse_text(content: str, name: str) -> ConfigFile:
    try:
        data = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{name}: {at}{problem}") from exc

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: the top level must be a mapping of keys")
    return ConfigFile(name=name, data=data)


def validate(file: ConfigFile, model: type[M]) -> M:
    """The file as a model, or ConfigError on its first mistake."""
    try:
        return model.model_validate(file.data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        more = len(errors) - 1
        message = _message(first)
        if more:
            message += f" (and {more} more {'error' if more == 1 else 'errors'})"
        raise file.error(_location(first), message) from exc


def _location(error: ErrorDetails) -> list[str | int]:
    where: list[str | int] = list(error["loc"])
    ctx = error.get("ctx") or {}
    if error["type"] == "config" and ctx.get("field"):
        where.extend(str(ctx["field"]).split("."))
    return where


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "config":
        return str(ctx["message"])
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "literal_error":
        return f"must be {ctx['expected']}"
    return _MESSAGES.get(kind, error["msg"][:1].lower() + error["msg"][1:])


def _dotted(where: Sequence[str | int]) -> str:
    text = ""
    for part in where:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text
