"""Templates with placeholders, rendered in a sandbox.

A template is written by an administrator and filled with data about people
who write in from outside, so rendering must neither reach files, private
attributes or code, nor let a value break out of the part it lands in: the
HTML part is escaped, the subject loses its line breaks.
"""

from __future__ import annotations

import operator
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from shared.errors import ConfigError

# Longest string or list one `*` may build: keeps `{{ 'x' * 10**9 }}` from
# exhausting memory in a worker.
MAX_PRODUCT = 100_000
MAX_EXPONENT = 100

_OUTSIDE = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


class TemplateSource(Protocol):
    """What render needs of a template: the stored model fits."""

    @property
    def id(self) -> str: ...

    @property
    def subject(self) -> str: ...

    @property
    def text(self) -> str: ...

    @property
    def html(self) -> str | None: ...


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(
        self, context: Any, operator_name: str, left: Any, right: Any
    ) -> Any:
        if operator_name == "**":
            if isinstance(right, int) and abs(right) > MAX_EXPONENT:
                raise SecurityError("exponent too large")
            return left**right
        if isinstance(left, int) and isinstance(right, str | list | tuple):
            left, right = right, left
        if (
            isinstance(left, str | list | tuple)
            and isinstance(right, int)
            and len(left) * right > MAX_PRODUCT
        ):
            raise SecurityError("result of '*' too large")
        return operator.mul(left, right)


def _environment(autoescape: bool) -> _Sandbox:
    env = _Sandbox(
        undefined=StrictUndefined,
        autoescape=autoescape,
        keep_trailing_newline=True,
    )
    # Only `range` stays: the other globals (lipsum, cycler, ...) are code a
    # message template has no use for.
    env.globals = {"range": env.globals["range"]}
    return env


@lru_cache(maxsize=2)
def _env(autoescape: bool) -> _Sandbox:
    return _environment(autoescape)


def check(source: str) -> None:
    """Raise ConfigError naming the line when source is not a valid template."""
    try:
        tree = _env(False).parse(source)
    except TemplateSyntaxError as exc:
        raise ConfigError(f"line {exc.lineno}: {exc.message}") from exc

    for node in tree.find_all(_OUTSIDE):
        raise ConfigError(
            f"line {node.lineno}: a template cannot include, import or "
            "extend other templates"
        )


def render(template: TemplateSource, context: Mapping[str, Any]) -> Rendered:
    """Fill a template's parts; ConfigError names the part and line that failed.

    Pass plain values and mappings in the context, not database objects: the
    sandbox blocks private attributes and mutation, yet every public
    attribute of an object handed in is readable.
    """
    part = _renderer(template.id, context)
    subject = part("subject", template.subject, False)
    # A line break in the subject would let a placeholder start new headers.
    subject = " ".join(subject.splitlines()).strip()
    text = part("text", template.text, False)
    html = None if template.html is None else part("html", template.html, True)
    return Rendered(subject=subject, text=text, html=html)


@lru_cache(maxsize=256)
def _compile(source: str, autoescape: bool) -> Template:
    check(source)
    return _env(autoescape).from_string(source)


def render_string(source: str, context: Mapping[str, Any]) -> str:
    """Fill one piece of plain text, e.g. a campaign's subject line."""
    return _renderer("(inline)", context)("text", source, False)


def _renderer(
    template_id: str, context: Mapping[str, Any]
) -> Callable[[str, str, bool], str]:
    def part(name: str, source: str, autoescape: bool) -> str:
        where = f"template {template_id}: {name}"
        try:
            return _compile(source, autoescape).render(context)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        except TemplateError as exc:
            line = _template_line(exc.__traceback__)
            at = f"line {line}: " if line else ""
            kind = "unknown placeholder: " if isinstance(exc, UndefinedError) else ""
            raise ConfigError(f"{where}: {at}{kind}{exc.message}") from exc

    return part


def _template_line(tb: types.TracebackType | None) -> int | None:
    """The template line a render error came from, as jinja2 rewrote it."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
