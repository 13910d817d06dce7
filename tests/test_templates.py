"""Templates only iterate: no arithmetic, no comparisons, no computed conditions (docs/architecture.md).

Python computes every number into the plans (ebnn_codegen/codegen/model_plan.py, kernel_plan.py);
a template may output fields, loop over lists, branch on a plan's flags and join or format
values.  This test scans the Jinja expressions of every template in ``templates/`` (string
literals removed; C text outside ``{{ }}`` / ``{% %}`` is not Jinja and may hold any operator).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"

_JINJA = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}", re.S)
_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_ARITH = re.compile(r"\*\*|//|[-+*/%]|==|!=|<=|>=|<|>")
_COMPUTING_FILTERS = re.compile(r"\|\s*(length|count|sum|min|max|list|select|reject|selectattr|rejectattr|map)\b")
_CALLS = re.compile(r"\b(range|loop\.index0?|loop\.revindex0?|loop\.length)\b")


def expressions(text: str) -> list[tuple[int, str]]:
    """(line, expression) of every Jinja tag, without trim markers and string literals."""
    out = []
    for m in _JINJA.finditer(text):
        body = m.group(1) if m.group(1) is not None else m.group(2)
        body = body.strip()
        body = body.removeprefix("-").removesuffix("-")
        out.append((text.count("\n", 0, m.start()) + 1, _STRING.sub('""', body)))
    return out


def problems(text: str) -> list[str]:
    found = []
    for line, expr in expressions(text):
        if expr.startswith("#"):  # a Jinja comment
            continue
        for pattern, what in ((_ARITH, "operator"), (_COMPUTING_FILTERS, "computing filter"), (_CALLS, "call")):
            m = pattern.search(expr)
            if m:
                found.append(f"line {line}: {what} {m.group(0)!r} in {expr!r}")
    return found


@pytest.mark.parametrize("path", sorted(TEMPLATES.glob("*.j2")), ids=lambda p: p.name)
def test_template_has_no_arithmetic(path: Path) -> None:
    assert problems(path.read_text()) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "{{ a + b }}",
        "{{ n - 1 }}",
        "{{ x * 4 }}",
        "{{ w // 8 }}",
        "{{ w % 8 }}",
        "{% if a == b %}{% endif %}",
        "{% if n >= 0 %}{% endif %}",
        "{% if xs | rejectattr('a') | list | length %}{% endif %}",
        "{%- for i in range(k) %}{% endfor %}",
        "{{ blocks | length - 1 }}",
        "{{ loop.index0 }}",
    ],
)
def test_scanner_catches(snippet: str) -> None:
    assert problems(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "{{ name }}_w{{ b.index }}[] = { a + b };",
        "{{ ' + ' if not loop.last }}",
        "{%- if s.first and not s.border_bounds %}{% endif %}",
        '{{ b.kernel | join("x") }}',
        '{{ provenance(name ~ ".c", prov) }}',
        "{# a comment with 1 + 1 #}",
    ],
)
def test_scanner_allows(snippet: str) -> None:
    assert problems(snippet) == [], snippet
