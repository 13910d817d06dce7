"""Every emitted C identifier starts with the model name: a table test of its validation.

The model name becomes ``NAME.h``/``NAME.c``, functions (``NAME_run``), arrays
(``NAME_w0``) and, upper-cased, macros and the header guard (``NAME_H``).  So
it must be a C identifier, not a keyword of any C standard through C23, not
start with ``_`` (``_net`` -> ``_NET_H`` is reserved), not name the runtime's
own files, and leave room for the longest suffix.  Text copied into comments
(the provenance header) is sanitised separately.
"""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ebnn_codegen.codegen import sanitize_comment
from ebnn_codegen.config import check_identifier
from ebnn_codegen.errors import ConfigError

# Written out here from the standards, independently of ebnn_codegen.config.C_KEYWORDS.
C89 = """auto break case char const continue default do double else enum extern float for goto if int long
register return short signed sizeof static struct switch typedef union unsigned void volatile while""".split()
C99 = "inline restrict _Bool _Complex _Imaginary".split()
C11 = "_Alignas _Alignof _Atomic _Generic _Noreturn _Static_assert _Thread_local".split()
C23 = """alignas alignof bool constexpr false nullptr static_assert thread_local true typeof typeof_unqual
_BitInt _Decimal32 _Decimal64 _Decimal128""".split()

VALID = [
    "net",
    "N",
    "x1",
    "mnist_small",
    "Net_2",
    "int8_net",  # keywords only as a whole name are refused
    "integer",
    "returns",
    "ebnn_runtime2",
    "ebnn",
    "n" * 48,
]

INVALID = [
    # (name, text the error must contain)
    ("", "it is empty"),
    ("3net", "starts with a digit"),
    ("_net", "starts with '_'"),
    ("_Net", "starts with '_'"),
    ("__net", "starts with '_'"),
    ("n" * 49, "longer than 48 characters"),
    ("my net", "contains ' '"),
    ("my-net", "contains '-'"),
    ("net.v2", "contains '.'"),
    ("r\u00e9seau", "contains '\\xe9'"),
    ("net\u200b", "contains '\\u200b'"),  # zero-width space
    ("ebnn_runtime", "reserved"),
    ("EBNN_RUNTIME", "reserved"),
    ("Ebnn_Runtime", "reserved"),
    # attempts to inject text into the generated C
    ("net*/", "contains '*'"),
    ("net */ int evil; /*", "contains ' '"),
    ("net*/int", "contains '*'"),
    ("*/ #include <stdio.h> /*", "contains '*'"),
    ('net\n#include "evil.h"', "contains '\\n'"),
    ("net\r\nint x;", "contains '\\r'"),
    ("#include <stdlib.h>", "contains '#'"),
    ("net // comment", "contains ' '"),
    ('net"); system("sh', "contains '\"'"),
    ("net\\", "contains '\\\\'"),
    ("net\x00evil", "contains '\\x00'"),
    ("net\tint", "contains '\\t'"),
    ("../../etc/net", "contains '.'"),
    ("a/b", "contains '/'"),
    ("net;", "contains ';'"),
    ("net(x)", "contains '('"),
    ("net$1", "contains '$'"),  # a GNU extension, not standard C
]


@pytest.mark.parametrize("name", VALID)
def test_valid_identifier(name: str) -> None:
    assert check_identifier(name) == name
    for suffix in ("_run_batch", "_check_workspace", "_H", "_BLOCK0_BYTES"):
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name + suffix)


@pytest.mark.parametrize(("name", "reason"), INVALID, ids=[repr(n)[:30] for n, _ in INVALID])
def test_invalid_identifier(name: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_identifier(name, "config.name")
    message = str(info.value)
    assert message.startswith("config.name '")
    assert reason in message
    # the message itself is one printable ASCII line, whatever the name held
    assert "\n" not in message and "\r" not in message and message.isascii() and message.isprintable()
    hint = info.value.hint or ""
    suggested = re.search(r"'([^']*)'", hint)
    if suggested and "reserved" not in message:  # the suggested name is itself valid
        assert check_identifier(suggested.group(1)) == suggested.group(1)


@pytest.mark.parametrize("keyword", C89 + C99 + C11 + C23)
def test_c_keywords_through_c23_are_refused(keyword: str) -> None:
    with pytest.raises(ConfigError, match="not a valid C identifier"):
        check_identifier(keyword)


@pytest.mark.parametrize("value", [42, None, 3.5, ["net"], b"net"])
def test_non_string_names(value: object) -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        check_identifier(value)


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ("plain text", "plain text"),
        ("a*/b", "a*?b"),
        ("/*x", "?*x"),
        ("*/*/", "*?*?"),
        ("/*/", "?*?"),
        ("line\nbreak", "line?break"),
        ("cr\rlf", "cr?lf"),
        ("tab\there", "tab?here"),
        ("r\u00e9seau", "r?seau"),
        ("nul\x00", "nul?"),
    ],
)
def test_sanitize_comment(text: str, safe: str) -> None:
    assert sanitize_comment(text) == safe


@given(st.text())
def test_sanitized_comment_cannot_close_or_open_a_comment(text: str) -> None:
    safe = sanitize_comment(text)
    assert "*/" not in safe and "/*" not in safe
    assert all(ch in string.printable and ch not in "\n\r\t\x0b\x0c" for ch in safe)
    assert len(safe) == len(text)


@given(st.text(alphabet=string.ascii_letters + string.digits + "_*/#\n \"'\\.;-", max_size=60))
def test_check_identifier_accepts_only_plain_identifiers(name: str) -> None:
    try:
        check_identifier(name)
    except ConfigError:
        return
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,47}", name)
