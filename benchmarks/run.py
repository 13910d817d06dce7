#!/usr/bin/env python3
"""The benchmark suite: accuracy, speed and size of the reference models on every target.

    python benchmarks/run.py                      # everything (about 10 minutes on 2 cores)
    python benchmarks/run.py --quick              # mnist_uno on avr and cortex-m4 only, 1,000 test images
    python benchmarks/run.py --json results.json  # also write the numbers as JSON
    python benchmarks/run.py --models fashion_m4 --update benchmarks/results.json  # re-measure one model

Per reference model (examples/models/*.pt, with its dataset):
  * accuracy of the host C build on the full test set, the time to run it, and the time to
    verify it bit-exactly against PyTorch (every hidden bit and every score);
  * per target and kernel strategy (reference, fast): cycles (avr, simavr) or executed
    instructions (qemu), per inference, per binary MAC and per block; flash, static RAM and
    peak stack; the ratio reference / fast from the same run.
Plus the AVR XNOR-popcount floor (benchmarks/floor_avr.c): a 784-bit dot product with the
popcount table in flash and in SRAM, and the distance of mnist_uno's binary blocks to it.
A target whose tools are missing, or a model too large for a target, is reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

import ebnn_codegen as E  # noqa: E402
from ebnn_codegen import api  # noqa: E402
from ebnn_codegen import targets as mcu  # noqa: E402 - the registry (get)
from ebnn_codegen.data.mnist import load as load_data  # noqa: E402
from ebnn_codegen.errors import CodegenError  # noqa: E402

# model -> how its test set is made (the recipes in examples/configs and README)
MODELS = {
    "mnist_uno": {"dataset": "mnist"},
    "mnist_uno_best": {"dataset": "mnist"},
    "rgb32_device": {"dataset": "fashion-mnist", "classes": [0, 1, 7], "rgb32": True},
    "fashion_m4": {"dataset": "fashion-mnist"},
}
TARGETS = ("avr", "cortex-m0", "cortex-m4", "rv32imc", "xtensa-lx106")
KERNELS = ("reference", "fast")


def test_set(spec: dict[str, Any], n: int | None) -> tuple[np.ndarray, np.ndarray]:
    from train_mnist import select_classes, to_rgb32

    x, y = load_data(spec["dataset"], "test")
    if spec.get("classes"):
        x, y = select_classes(x, y, spec["classes"])
    if spec.get("rgb32"):
        x = to_rgb32(x)
    return (x[:n], y[:n]) if n else (x, y)


def accuracy(model: Any, graph: Any, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    api.run(graph, x[:8])  # build (cached) outside the timing
    t0 = time.perf_counter()
    result = api.run(graph, x)
    run_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = api.run(graph, x)
    rep = api.compare(graph, model, x, result, "host", "fast")
    verify_s = time.perf_counter() - t0
    return {
        "test_samples": len(x),
        "accuracy_host_c": round(float(np.mean(result.pred == y)), 4),
        "host_run_seconds": round(run_s, 3),
        "host_verify_seconds": round(verify_s, 3),
        "bit_exact_vs_torch": bool(rep.ok),
    }


def floor_avr() -> dict[str, Any]:
    t = mcu.get("avr")
    elf = t.build_program({"floor_avr.c": (ROOT / "benchmarks" / "floor_avr.c").read_text()})
    emu = t.measure(elf)
    calib = emu.regions[0][0]
    flash, sram = emu.regions[1][0] - calib, emu.regions[2][0] - calib
    return {
        "bits": 784,
        "cycles_table_in_flash": flash,
        "cycles_table_in_sram": sram,
        "cycles_per_bit_flash": round(flash / 784, 3),
        "cycles_per_bit_sram": round(sram / 784, 3),
    }


def bench_target(graph: Any, target: str, kernels: tuple[str, ...]) -> dict[str, Any]:
    t = mcu.get(target)
    if not t.tools_available():
        return {"skipped": f"tools for {target} are not installed"}
    out: dict[str, Any] = {}
    for k in kernels:
        try:
            if target == "avr":
                t.check_fits(graph, k, measure=False)
            out[k] = t.bench(graph, k)
        except CodegenError as exc:
            out[k] = {"skipped": str(exc).splitlines()[0]}
    unit = t.metric
    if all(unit in out.get(k, {}) for k in ("reference", "fast")):
        out["ratio_reference_over_fast"] = round(out["reference"][unit] / out["fast"][unit], 2)
    return out


def binary_per_mac(res: dict[str, Any], unit: str) -> float | None:
    blocks = [b for b in res["blocks"] if b["type"] in ("bconv", "blinear", "exit")]
    macs = sum(b["binary_macs"] for b in blocks)
    return round(sum(b[unit] for b in blocks) / macs, 3) if macs else None


def _fast(results: dict[str, Any], model: str, target: str) -> dict[str, Any]:
    got: dict[str, Any] = results["models"].get(model, {}).get("targets", {}).get(target, {}).get("fast", {})
    return got


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The speed goals of docs/speed.md ("Speed II"), each with what was measured in this run and
    whether it holds (``met`` is None where this run did not measure it)."""
    out: list[dict[str, Any]] = []

    def goal(name: str, wanted: str, measured: dict[str, Any], checks: list[bool | None]) -> None:
        met = None if any(c is None for c in checks) else all(checks)
        out.append({"goal": name, "wanted": wanted, "measured": measured, "met": met})

    def at_most(v: Any, limit: float) -> bool | None:
        return None if v is None else bool(v <= limit)

    def at_least(v: Any, limit: float) -> bool | None:
        return None if v is None else bool(v >= limit)

    uno = _fast(results, "mnist_uno", "avr")
    goal(
        "1 same model, faster",
        "mnist_uno on the ATmega328P <= 480,000 cycles (30 ms at 16 MHz), outputs bit-identical",
        {"cycles": uno.get("cycles"), "blocks": {b["type"]: b["cycles"] for b in uno.get("blocks", [])}},
        [at_most(uno.get("cycles"), 480_000)],
    )
    best = results["models"].get("mnist_uno_best", {})
    best_avr = _fast(results, "mnist_uno_best", "avr")
    full = best.get("test_samples") == 10_000 or None
    goal(
        "2 better model, same time",
        "mnist_uno_best >= 98.5 % on the 10,000 MNIST test images (host C) in <= 800,000 cycles (50 ms) "
        "on the ATmega328P, fitting the Uno",
        {
            "accuracy_host_c": best.get("accuracy_host_c"),
            "test_samples": best.get("test_samples"),
            "cycles": best_avr.get("cycles"),
            "image_flash_bytes": best_avr.get("image_flash_bytes"),
            "image_sram_bytes": best_avr.get("image_sram_bytes"),
            "bit_exact_vs_torch": best.get("bit_exact_vs_torch"),
        },
        [
            full,
            at_least(best.get("accuracy_host_c"), 0.985),
            at_most(best_avr.get("cycles"), 800_000),
            best.get("bit_exact_vs_torch"),
        ],
    )
    per_mac = {
        tg: _fast(results, "mnist_uno", tg).get("binary_blocks_per_mac") for tg in ("cortex-m4", "rv32imc", "cortex-m0")
    }
    goal(
        "3 32-bit binary blocks",
        "mnist_uno's binary blocks <= 0.30 instructions per binary MAC on cortex-m4 and rv32imc, <= 0.50 on cortex-m0",
        {"binary_blocks_per_mac": per_mac},
        [at_most(per_mac["cortex-m4"], 0.30), at_most(per_mac["rv32imc"], 0.30), at_most(per_mac["cortex-m0"], 0.50)],
    )
    fm = results["models"].get("fashion_m4", {})
    fm_t = {tg: _fast(results, "fashion_m4", tg) for tg in ("cortex-m4", "rv32imc")}
    ram = {tg: (r["image_sram_bytes"] + r["peak_stack_bytes"]) if r else None for tg, r in fm_t.items()}
    goal(
        "4 a harder task on 32-bit",
        "fashion_m4 >= 90 % on the 10,000 Fashion-MNIST test images (host C), with its instruction counts on "
        "cortex-m4 and rv32imc, within 64 KB of RAM",
        {
            "accuracy_host_c": fm.get("accuracy_host_c"),
            "test_samples": fm.get("test_samples"),
            "instructions": {tg: r.get("instructions") for tg, r in fm_t.items()},
            "ram_bytes_with_stack": ram,
        },
        [fm.get("test_samples") == 10_000 or None, at_least(fm.get("accuracy_host_c"), 0.90)]
        + [at_most(v, 65_536) for v in ram.values()],
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="mnist_uno on avr and cortex-m4, 1,000 test images")
    p.add_argument("--json", default=None, help="write the results to this file")
    p.add_argument(
        "--update",
        default=None,
        metavar="FILE",
        help="merge into this results file: the models measured in this run replace theirs, the others "
        "are kept (each model records the date it was measured), the goals are recomputed",
    )
    p.add_argument("--models", default=None, help="comma-separated subset of " + ",".join(MODELS))
    p.add_argument("--targets", default=None, help="comma-separated subset of " + ",".join(TARGETS))
    args = p.parse_args(argv)

    models = args.models.split(",") if args.models else (["mnist_uno"] if args.quick else list(MODELS))
    targets = args.targets.split(",") if args.targets else (["avr", "cortex-m4"] if args.quick else list(TARGETS))
    results: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.processor() or ''} {platform.system()} {platform.release()}".strip(),
        "python": platform.python_version(),
        "models": {},
    }
    rows = []
    for name in models:
        path = ROOT / "examples" / "models" / f"{name}.pt"
        if not path.exists():
            results["models"][name] = {"skipped": f"{path} not found"}
            continue
        model = E.load(path)
        graph = E.compile(model, log=lambda m: None)
        rep = api.report(graph)
        entry: dict[str, Any] = {
            "binary_macs": int(rep["totals"]["binary_macs"]),
            "targets": {},
        }
        x, y = test_set(MODELS[name], 1000 if args.quick else None)
        entry.update(accuracy(model, graph, x, y))
        print(
            f"{name}: accuracy {entry['accuracy_host_c']:.4f} on {len(x)} test images (host C), "
            f"run {entry['host_run_seconds']} s, verified bit-exact vs torch: {entry['bit_exact_vs_torch']} "
            f"in {entry['host_verify_seconds']} s",
            flush=True,
        )
        for tg in targets:
            res = bench_target(graph, tg, KERNELS)
            entry["targets"][tg] = res
            unit = mcu.get(tg).metric
            for k in KERNELS:
                r = res.get(k, res)
                if unit not in r:
                    rows.append((name, tg, k, "skipped", r.get("skipped", "")[:60], "", "", "", "", ""))
                    continue
                r["binary_blocks_per_mac"] = binary_per_mac(r, unit)
                blocks = " ".join(f"{b['type']}:{b[unit]}" for b in r["blocks"])
                rows.append(
                    (
                        name,
                        tg,
                        k,
                        f"{r[unit]:,}",
                        f"{r[f'{unit}_per_mac']}",
                        f"{r['binary_blocks_per_mac']}",
                        f"{r['ms_at_clock']}",
                        f"{r['flash_bytes']}",
                        f"{r['sram_bytes']}/{r['peak_stack_bytes']}",
                        blocks,
                    )
                )
            if "ratio_reference_over_fast" in res:
                print(f"  {tg}: reference / fast = {res['ratio_reference_over_fast']}x", flush=True)
        entry["measured"] = results["date"]
        results["models"][name] = entry

    if "avr" in targets:
        fl = floor_avr()
        results["avr_floor"] = fl
        uno = results["models"].get("mnist_uno", {}).get("targets", {}).get("avr", {}).get("fast")
        if uno and "cycles" in uno:
            fl["mnist_uno_binary_cycles_per_mac"] = uno["binary_blocks_per_mac"]
            fl["distance_to_floor_flash"] = round(uno["binary_blocks_per_mac"] / fl["cycles_per_bit_flash"], 3)

    head = (
        "model",
        "target",
        "kernels",
        "count",
        "per MAC",
        "binary/MAC",
        "ms@clock",
        "flash",
        "RAM/stack",
        "per block",
    )
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    print()
    for r in [head, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    if "avr_floor" in results:
        fl = results["avr_floor"]
        print(
            f"\nAVR XNOR-popcount floor (784-bit dot, byte loop): {fl['cycles_per_bit_flash']} cycles/bit "
            f"(table in flash), {fl['cycles_per_bit_sram']} (table in SRAM)"
        )
        if "distance_to_floor_flash" in fl:
            print(
                f"mnist_uno fast, binary blocks: {fl['mnist_uno_binary_cycles_per_mac']} cycles/MAC = "
                f"{fl['distance_to_floor_flash']} x the floor (flash table)"
            )
    if args.update:
        merged = json.loads(Path(args.update).read_text())
        merged["models"].update(results["models"])
        if "avr_floor" in results:
            merged["avr_floor"] = results["avr_floor"]
        merged["date"] = results["date"]
        results = merged
    results["goals"] = goals(results)
    print()
    for g in results["goals"]:
        verdict = {True: "met", False: "NOT met", None: "not measured in this run"}[g["met"]]
        print(f"goal {g['goal']}: {verdict} ({json.dumps(g['measured'])})")
    for out in dict.fromkeys(o for o in (args.json, args.update) if o):
        Path(out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
