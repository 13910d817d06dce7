"""Boards: a table of data (``boards.json``), the serial agent and the virtual board.

=================  ===========================================================
module             what
=================  ===========================================================
``boards.json``    the board table: chip, clock, flash/RAM, flash tool, baud
``serial``         the host side of the agent's protocol: framing, CRC-16,
                   timeouts on every read, retries (the one serial module)
``firmware``       the agent firmware of a model (model + ebnn_agent.c), its
                   model hash and INFO payload
``vboard``         the virtual Uno: libsimavr + optiboot + a pty
``flash``          ``ebnn-gen flash``: fit check, build, avrdude, INFO check
``remote``         ``run / verify / bench --port``: the model on the board
=================  ===========================================================

A board is a few lines of JSON: no code names a board.  A board whose
``flash_tool`` is ``esptool`` (an ESP8266 board) is flashed by esptool
instead of avrdude; the rest of the path (agent, --port) is the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import CodegenError

_TABLE = Path(__file__).with_name("boards.json")


@dataclass(frozen=True)
class Board:
    """One row of the board table (see boards.json for every field's meaning)."""

    name: str
    description: str
    chip: str
    mcu: str
    target: str
    f_cpu: int
    flash_bytes: int
    sram_bytes: int
    app_flash_bytes: int
    flash_tool: str
    upload_baud: int
    agent_baud: int
    boot_wait_s: float
    programmer: str = ""
    avrdude_part: str = ""
    app_flash_note: str = ""
    simulator: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_FIELDS = set(Board.__dataclass_fields__) - {"name", "extra"}


@lru_cache(maxsize=1)
def table() -> dict[str, Board]:
    """Every board of boards.json, by name."""
    raw = json.loads(_TABLE.read_text())
    out = {}
    for name, row in raw.items():
        if name.startswith("_"):
            continue
        known = {k: v for k, v in row.items() if k in _FIELDS}
        extra = {k: v for k, v in row.items() if k not in _FIELDS}
        out[name] = Board(name=name, extra=extra, **known)
    return out


def names() -> list[str]:
    return sorted(table())


def get(name: str) -> Board:
    boards = table()
    if name not in boards:
        raise CodegenError(f"unknown board '{name}' (choose from: {', '.join(sorted(boards))})")
    return boards[name]


__all__ = ["Board", "get", "names", "table"]
