"""PlanBuffers: exact sizes of the working memory.

Hidden block ``i`` writes its packed output into slot ``i % 2`` of the
workspace and reads block ``i - 1``'s from the other slot (block 0 reads the
uint8 input, the exit reads the last hidden block).  Each slot is as large as
the largest output written into it, so the workspace is
``max(even outputs) + max(odd outputs)`` bytes, nothing more.  The trace (every
hidden block's output, for verification and DDNN) is their concatenation.
"""

from __future__ import annotations

from ..ir import Buffers, Model


class PlanBuffers:
    def apply(self, model: Model) -> tuple[Model, bool]:
        if model.buffers is not None:
            return model, False
        sizes = [b.out_bytes for b in model.hidden]
        slot_bytes = [max([s for i, s in enumerate(sizes) if i % 2 == k] or [0]) for k in (0, 1)]
        offsets, total = [], 0
        for s in sizes:
            offsets.append(total)
            total += s
        model.buffers = Buffers(
            slot=tuple(i % 2 for i in range(len(sizes))),
            slot_offset=(0, slot_bytes[0]),
            slot_bytes=tuple(slot_bytes),
            workspace_bytes=max(1, slot_bytes[0] + slot_bytes[1]),
            trace_offsets=tuple(offsets),
            trace_bytes=total,
        )
        return model, True
