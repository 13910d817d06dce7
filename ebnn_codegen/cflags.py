"""The one list of strict C flags.

Every build of generated C (host library, sanitizer harness, cross builds for
each target, the DDNN gateway, the fuzz harnesses) and every test that checks
"compiles cleanly" uses :data:`STRICT_CFLAGS`; a build adds only optimisation,
architecture and sanitizer flags on top.
"""

from __future__ import annotations

STRICT_CFLAGS: tuple[str, ...] = (
    "-std=c99",
    "-Wall",
    "-Wextra",
    "-Wpedantic",
    "-Wconversion",
    "-Wdouble-promotion",
    "-Werror",
)
