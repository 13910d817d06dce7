"""What the ``ddnn`` subcommands share (offline ones in cli/ddnn.py, networked ones in cli/ddnn_net.py)."""

from __future__ import annotations

from typing import Any

from ..errors import CodegenError


def load_ddnn(path: str) -> Any:
    """The DDNN checkpoint at ``path``; a single device section is refused with a hint."""
    from .. import api
    from ..ddnn.model import DDNN

    model = api.load(path)
    if not isinstance(model, DDNN):
        raise CodegenError(f"{path}: a single device section, not a DDNN", hint="use `ebnn-gen export` for it")
    return model
