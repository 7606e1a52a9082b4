"""Templates render placeholders in a sandbox and say clearly what is wrong."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from shared.errors import ConfigError
from shared.templating import check, render, render_string


@dataclass
class Source:
    subject: str
    text: str
    html: str | None = None
    id: str = "welcome"


def test_placeholders_are_filled_in_every_part() -> None:
    template = Source(
        subject="Welcome, {{ contact.name }}",
        text="Hello {{ contact.name }},\nyour case is {{ case }}.",
        html="<p>Hello {{ contact.name }}</p>",
    )

    rendered = render(template, {"contact": {"name": "Ada"}, "case": 7})

    assert rendered.subject == "Welcome, Ada"
    assert rendered.text == "Hello Ada,\nyour case is 7."
    assert rendered.html == "<p>Hello Ada</p>"


def test_html_part_escapes_values_and_text_part_keeps_them() -> None:
    template = Source(subject="s", text="{{ name }}", html="<b>{{ name }}</b>")

    rendered = render(template, {"name": "<script>x</script> & co"})

    assert rendered.html == "<b>&lt;script&gt;x&lt;/script&gt; &amp; co</b>"
    assert rendered.text == "<script>x</script> & co"


def test_template_without_html_renders_no_html_part() -> None:
    assert render(Source(subject="s", text="t"), {}).html is None


def test_line_breaks_in_a_subject_value_cannot_start_a_header() -> None:
    template = Source(subject="Re: {{ subject }}", text="t")

    rendered = render(template, {"subject": "hi\r\nBcc: victim@example.test\n"})

    assert "\n" not in rendered.subject and "\r" not in rendered.subject
    assert rendered.subject == "Re: hi Bcc: victim@example.test"


def test_unknown_placeholder_names_template_part_and_line() -> None:
    template = Source(subject="s", text="Hello\n{{ contact.nmae }}")

    with pytest.raises(ConfigError) as error:
        render(template, {"contact": {"name": "Ada"}})

    message = str(error.value)
    assert message.startswith("template welcome: text: line 2: unknown placeholder")
    assert "nmae" in message


@pytest.mark.parametrize(
    "source",
    [
        "{{ name.__class__ }}",
        "{{ name.__class__.__mro__[1].__subclasses__() }}",
        "{{ items.append(1) }}",
        "{{ lipsum() }}",
    ],
)
def test_template_cannot_reach_private_attributes_or_code(source: str) -> None:
    with pytest.raises(ConfigError):
        render_string(source, {"name": "x", "items": []})


def test_template_cannot_read_files() -> None:
    with pytest.raises(ConfigError, match="line 1: a template cannot include"):
        check("{% include '/etc/passwd' %}")


def test_template_cannot_build_huge_strings() -> None:
    with pytest.raises(ConfigError, match="too large"):
        render_string("{{ 'x' * 1000000000 }}", {})


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"^line 3: "):
        check("Hello\nthere\n{% if name %}unclosed")


def test_valid_template_passes_the_check() -> None:
    check("{% for item in items %}{{ item|upper }}{% endfor %}")
