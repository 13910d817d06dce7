#!/usr/bin/env python3
"""Kernel experiments for cores without free shifts (lx106): executed instructions of inner-loop
variants (benchmarks/kernels_lx106.c) per bit, pixel or division, from the qemu plugin.

    python benchmarks/kernels_lx106.py                      # xtensa-lx106 rv32imc cortex-m3
    python benchmarks/kernels_lx106.py xtensa-lx106 --json out.json

Every group of variants must compute the same result, or the script exits 1.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ebnn_codegen import targets  # noqa: E402

# variants that compute the same thing: (name prefixes)
GROUPS = (("swar", "table"), ("u8_",), ("lin_",), ("div3_",))


def measure(target: str) -> list[dict]:
    t = targets.get(target)
    t.require()
    src = (ROOT / "benchmarks" / "kernels_lx106.c").read_text()
    emu = t.measure(t.build_program({"kernels_lx106.c": src}))
    calib = emu.regions[0][0]
    lines = [ln.split() for ln in emu.text.splitlines() if re.match(r"^[a-z0-9_]+ -?\d+ \d+$", ln)]
    rows = []
    for (count, _), (name, result, bits) in zip(emu.regions[1:], lines, strict=True):
        n = count - calib
        rows.append(
            {
                "target": target,
                "variant": name,
                "result": int(result),
                "instructions": n,
                "per_item": round(n / int(bits), 3),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("targets", nargs="*", default=["xtensa-lx106", "rv32imc", "cortex-m3"])
    p.add_argument("--json", default=None, help="write the rows to this file")
    args = p.parse_args(argv)
    rows = [r for t in args.targets for r in measure(t)]
    ok = all(
        len({r["result"] for r in rows if r["target"] == t and r["variant"].startswith(group)}) == 1
        for t in args.targets
        for group in GROUPS
    )
    for r in rows:
        print(
            f"{r['target']:13s} {r['variant']:14s} {r['instructions']:7d} instructions  {r['per_item']:7.3f} per item"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    if not ok:
        print("error: variants of one group disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
