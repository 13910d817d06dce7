"""Errors that mean "the user asked for something we cannot do".

A :class:`CodegenError` is a user mistake (bad checkpoint, bad config, a model
that does not fit the target): the CLI prints it as one ``error: ...`` line
and exits with code 2.  Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class CodegenError(Exception):
    """A user-facing error with an optional hint."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(CodegenError):
    """The model config does not describe a valid network."""


class CheckpointError(CodegenError):
    """A file is not a readable ebnn-codegen checkpoint."""


class LoweringError(CodegenError):
    """The trained model cannot be lowered exactly (e.g. a non-monotonic threshold)."""


class ResourceError(CodegenError):
    """A model does not fit a target, or would take unbounded resources."""


class ToolError(CodegenError):
    """An external tool (compiler, emulator) is missing or failed."""


class FitError(ResourceError):
    """A model does not fit the chip of a target: the message carries the numbers
    (needed, the chip's size, the budget after its reserves, the largest part)."""


class StackWindowError(ToolError):
    """The stack of one inference overflowed the RAM the size harness could paint (``window``
    bytes): the model needs more than that on the chip (raised by a target's ``stack_of``)."""

    def __init__(self, message: str, window: int) -> None:
        super().__init__(message)
        self.window = window


class LinkOverflowError(ToolError):
    """The linker placed more than a memory region holds.

    Raised by :func:`ebnn_codegen.targets.toolchain.link_overflow` (the one place that
    reads the linker's text); a target turns it into a :class:`FitError` with the numbers.
    ``region`` is the linker's region name (``text``, ``data``, ``FLASH``, ``RAM`` ...),
    ``overflow_bytes`` how much did not fit (None when the linker did not say).
    """

    def __init__(self, message: str, region: str, overflow_bytes: int | None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.region = region
        self.overflow_bytes = overflow_bytes
        self.sizes: dict[str, int] = {}  # filled by the target: what the ELF measured before the refusal

    @property
    def is_flash(self) -> bool:
        return self.region.lower() in FLASH_REGIONS


FLASH_REGIONS = frozenset({"text", "flash", "rom", "irom"})
"""Linker region names that are program memory (the others count as RAM)."""
