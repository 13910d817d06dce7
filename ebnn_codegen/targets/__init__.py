"""Targets: where the generated C runs, behind one registry.

Every target implements the :class:`~.base.Target` protocol (run, check_fits, size, bench,
available; ``serial`` for boards).  Modules, by job:

* :mod:`.base` -- the protocol, RunResult and the record decoding every harness shares;
* :mod:`.host` -- the host (cc + cffi);
* :mod:`.mcu` -- what the emulated chips share (firmware builds, sizes, the fit check);
  :mod:`.avr` and :mod:`.qemu_targets` -- the chips; :mod:`.simavr` and :mod:`.qemu` -- the
  emulator drivers; :mod:`.harness` -- the generated harness glue; :mod:`.bench` -- the benchmark;
* :mod:`.toolchain` -- compilers and the build cache; :mod:`.elfsize` -- ELF accounting;
  :mod:`.chips` -- the chip catalogue (data); :mod:`.fit` -- the fit policy.

Adding a target: a module here that builds a target value (a chip entry in :mod:`.chips`, a
link recipe, a harness in ``firmware/``), and one line in :data:`_BUILTIN` below; never the
compiler.  Other packages may :func:`register` more targets at import.
"""

from __future__ import annotations

from ..errors import CodegenError
from . import avr, host, qemu_targets
from .base import RunResult, Target

_TARGETS: dict[str, Target] = {}


def register(target: Target | str, obj: Target | None = None) -> None:
    """Add ``target`` under its name (``register(name, target)`` is accepted too); a second,
    different target with the same name is a bug."""
    if isinstance(target, str):
        if obj is None or obj.name != target:
            raise ValueError(f"register('{target}', ...) needs a target named '{target}'")
        target = obj
    if target.name in _TARGETS and _TARGETS[target.name] is not target:
        raise ValueError(f"target '{target.name}' is registered twice")
    _TARGETS[target.name] = target


def names() -> list[str]:
    return sorted(_TARGETS)


def get(name: str) -> Target:
    """The target called ``name``; CodegenError (exit 2) listing the names otherwise."""
    if name not in _TARGETS:
        raise CodegenError(f"unknown target '{name}' (choose from: {', '.join(names())})")
    return _TARGETS[name]


_BUILTIN: list[Target] = [host.HostTarget(), *avr.TARGETS, *qemu_targets.TARGETS]
for _t in _BUILTIN:
    register(_t)

__all__ = ["RunResult", "Target", "get", "names", "register"]
