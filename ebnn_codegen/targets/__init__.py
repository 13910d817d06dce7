"""Targets: one module per target (host, avr, cortex-m*, rv32imc) behind one registry.

``get(name)`` returns an object with ``run(graph, x, kernels) -> RunResult``;
adding a chip means adding a module here and a harness in ``firmware/``,
never touching the compiler.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ..errors import CodegenError
from . import host

_TARGETS: dict[str, Any] = {
    "host": SimpleNamespace(name="host", run=host.run),
}


def register(name: str, target: Any) -> None:
    _TARGETS[name] = target


def names() -> list[str]:
    _load_optional()
    return sorted(_TARGETS)


def get(name: str) -> Any:
    _load_optional()
    if name not in _TARGETS:
        raise CodegenError(f"unknown target '{name}' (choose from: {', '.join(sorted(_TARGETS))})")
    return _TARGETS[name]


def _load_optional() -> None:
    """Import the MCU target modules, which register themselves."""
    try:
        from . import mcu  # noqa: F401
    except ImportError:
        pass
    try:
        from . import xtensa  # noqa: F401
    except ImportError:
        pass
