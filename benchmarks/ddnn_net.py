#!/usr/bin/env python3
"""The networked DDNN under load: every tier its own process on a local mosquitto.

    python benchmarks/ddnn_net.py                          # all runs below (about 15 minutes on 2 shared cores)
    python benchmarks/ddnn_net.py --runs max fixed         # some of them
    python benchmarks/ddnn_net.py --json ddnn_net.json     # also write every report

Runs (mnist-tiles test split, examples/models/ddnn_mnist_tiles.pt, devices as generated host C, the gateway's
local exit as the generated gateway C):

* ``max``: the full 10,000 samples as fast as the system keeps up (at most ``--window`` samples unanswered),
  one cloud: the fastest sustainable rate, latency percentiles per exit, bytes on the wire, and the
  sample-by-sample comparison with offline ``ddnn eval --devices c`` (the full-split equality run);
* ``fixed``: ``--fixed-samples`` samples at ``--fixed-rate`` samples/s (default: half of what ``max``
  sustained, or 20/s when ``max`` is not run): latency percentiles at a rate the system keeps up with;
* ``clouds``: ``--cloud-samples`` samples as fast as possible with one and with two cloud processes on a shared
  subscription.

The start-up of the processes (importing PyTorch, building the C) is not part of any figure: the stream
starts once every tier has reported ``online``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ebnn_codegen.ddnn.net.broker import Mosquitto  # noqa: E402
from ebnn_codegen.ddnn.net.system import SystemOptions, run_system  # noqa: E402
from ebnn_codegen.ddnn.net.transport import parse_broker  # noqa: E402

MODEL = str(ROOT / "examples/models/ddnn_mnist_tiles.pt")


def one(
    broker: Mosquitto, *, limit: int | None, rate: float | None, clouds: int, window: int, compare: bool
) -> dict[str, Any]:
    opts = SystemOptions(broker.url, parse_broker(broker.url), rate=rate, limit=limit, clouds=clouds, window=window)
    opts.compare = compare
    t0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rep = run_system(MODEL, "mnist-tiles", opts, log=lambda m: print(m, file=sys.stderr, flush=True))
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rep["benchmark"] = {
        "wall_s_with_startup": time.perf_counter() - t0,
        "tier_cpu_s_serving": {f"{t['tier']}{t['id']}": round(t["cpu_s"], 2) for t in rep["tiers"]},
        "children_cpu_s_total": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
    }
    return rep


def line(name: str, rep: dict[str, Any]) -> str:
    lat = rep["latency_ms"]
    b = rep["bytes_on_wire"]["per_sample"]
    s = (
        f"{name:8s} {rep['answered']}/{rep['samples']} answered, twice {rep['answered_twice']}, "
        f"{rep['throughput_samples_per_s']:.1f} samples/s (rate {rep['rate'] or 'max'}, clouds {rep['clouds']}); "
        f"latency ms p50/p99: local {lat['local']['p50']:.1f}/{lat['local']['p99']:.1f}, "
        f"cloud {lat['cloud']['p50']:.1f}/{lat['cloud']['p99']:.1f}; "
        f"DDNN bytes/sample {rep['bytes_per_sample']['total']:.1f} (raw {rep['bytes_per_sample']['raw']:.0f}); "
        f"on the wire payload {b['payload']:.1f} + MQTT overhead {b['mqtt_overhead']:.1f} B/sample"
    )
    if "offline" in rep:
        o = rep["offline"]
        s += f"; offline: {o['equal']}/{o['compared']} equal, {o['mismatches']} mismatches"
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", default=["max", "fixed", "clouds"], choices=["max", "fixed", "clouds"])
    ap.add_argument("--limit", type=int, default=None, help="samples of the max run (default: all 10,000)")
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--fixed-rate", type=float, default=None)
    ap.add_argument("--fixed-samples", type=int, default=1000)
    ap.add_argument("--cloud-samples", type=int, default=2000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("EBNN_CACHE", str(Path(tempfile.gettempdir()) / "ebnn-cache"))
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()}
    }
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        if "max" in args.runs:
            results["max"] = one(broker, limit=args.limit, rate=None, clouds=1, window=args.window, compare=True)
            print(line("max", results["max"]), flush=True)
        if "fixed" in args.runs:
            rate = args.fixed_rate
            if rate is None:
                rate = round(results["max"]["throughput_samples_per_s"] / 2, 1) if "max" in results else 20.0
            results["fixed"] = one(broker, limit=args.fixed_samples, rate=rate, clouds=1, window=4096, compare=False)
            print(line("fixed", results["fixed"]), flush=True)
        if "clouds" in args.runs:
            for k in (1, 2):
                rep = one(broker, limit=args.cloud_samples, rate=None, clouds=k, window=args.window, compare=False)
                results[f"clouds{k}"] = rep
                print(line(f"clouds{k}", rep), flush=True)
    results["machine"]["load_after"] = os.getloadavg()
    if args.json:
        for rep in results.values():
            if isinstance(rep, dict):
                rep.pop("answers", None)
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
