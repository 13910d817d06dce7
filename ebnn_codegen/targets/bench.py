"""The benchmark of an emulated target: exact cycles (simavr) or executed instructions (qemu).

Two firmwares run one inference of a fixed input (:func:`~.mcu.sample_input`): the SIZE
harness counts the whole inference between two region marks (after a calibration region,
whose count is subtracted), the BLOCKS harness marks the end of every block.  The counts
are deterministic: the same model, kernels and toolchain give the same numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import costs
from ..ir import Model
from .harness import MODE_BLOCKS, sample_input

if TYPE_CHECKING:
    from .mcu import McuTarget


def per_block(rep: dict[str, Any], counts: list[int], unit: str) -> list[dict[str, Any]]:
    """Cumulative counts at each block's end -> the count of each block, per binary MAC."""
    blocks, prev = [], 0
    for b, count in zip(rep["blocks"], counts, strict=True):
        n = count - prev
        prev = count
        macs = b["binary_macs"]
        blocks.append(
            {
                "index": b["index"],
                "type": b["type"],
                "binary_macs": macs,
                unit: n,
                f"{unit}_per_mac": round(n / macs, 3) if macs else None,
            }
        )
    return blocks


def bench(target: McuTarget, graph: Model, kernels: str = "fast") -> dict[str, Any]:
    """Exact cycles (AVR) or executed instructions (qemu) of one inference, and per block."""
    size, emu_size, _ = target.measure_size(graph, kernels)
    emu_blocks = target.measure(target.build(graph, kernels, MODE_BLOCKS, sample_input(graph)))
    calib = emu_size.regions[0][0]
    total = emu_size.regions[1][0] - calib
    rep = costs.report(graph)
    macs = int(rep["totals"]["binary_macs"])
    counts = [c - emu_blocks.regions[0][0] for c, _ in emu_blocks.regions[1:]]
    unit = target.metric
    chip = target.chip
    out = {
        "target": target.name,
        "chip": chip.name,
        "kernels": kernels,
        unit: total,
        "binary_macs": macs,
        f"{unit}_per_mac": round(total / macs, 3) if macs else None,
        "clock_hz": chip.clock_hz,
        "ms_at_clock": round(1000.0 * total / chip.clock_hz, 4),
        "flash_bytes": size["flash_bytes"],
        "sram_bytes": size["sram_bytes"],
        "peak_stack_bytes": size["peak_stack_bytes"],
        "image_flash_bytes": size["image_flash_bytes"],
        "image_sram_bytes": size["image_sram_bytes"],
        "blocks": per_block(rep, counts, unit),
    }
    out.update(target.bench_notes())
    return out
