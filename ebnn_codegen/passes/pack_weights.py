"""PackBinaryWeights: ±1 weights -> bytes in the layouts of :mod:`ebnn_codegen.bits`.

The first block's weights become a (c, i, j) bit stream per filter; binary
blocks' weights use the activation layout over the kernel window, so one
window tap is ``CB`` whole bytes.  Pad bits are 0.
"""

from __future__ import annotations

from .. import bits
from ..ir import Model


class PackBinaryWeights:
    def apply(self, model: Model) -> tuple[Model, bool]:
        changed = False
        for block in model.blocks:
            if block.packed_weights is not None:
                continue
            if block.is_first:
                block.packed_weights = bits.pack_weights_stream(block.weights)
            else:
                block.packed_weights = bits.pack_weights_hwc(block.weights)
            changed = True
        return model, changed
