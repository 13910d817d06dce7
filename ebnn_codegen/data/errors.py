"""The data package's error type (a module of its own, so the loaders import it without a cycle)."""

from __future__ import annotations

from ..errors import CodegenError


class DataError(CodegenError):
    """Raised when a dataset is missing, cannot be fetched, or is malformed."""
