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
