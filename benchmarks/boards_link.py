"""Measure the serial link to the virtual Uno: upload time, verify throughput per baud rate.

    python benchmarks/boards_link.py [--images 20] [--bauds 115200,250000,500000,1000000,2000000]

Starts `ebnn-gen board simulate --board uno`, then for each baud rate flashes
examples/models/mnist_uno.pt with the agent at that rate and runs `verify --port` on the
first N MNIST test images; prints one JSON object per rate (upload seconds, images/s,
whether every bit matched, the link's retries) and the agent's flash and RAM. A rate
"stayed reliable" when verify passed with zero retries.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ebnn_codegen.cli import main  # noqa: E402
from ebnn_codegen.data import mnist  # noqa: E402

MODEL = str(ROOT / "examples" / "models" / "mnist_uno.pt")


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["-q", *argv])
    return rc, out.getvalue()


def main_() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--bauds", default="115200,250000,500000,1000000,2000000")
    args = ap.parse_args()
    x, _ = mnist.load("mnist", "test", n=args.images)
    d = Path(tempfile.mkdtemp(prefix="ebnn-link-"))
    np.save(d / "x.npy", x)
    sim = subprocess.Popen(
        [sys.executable, "-m", "ebnn_codegen.cli", "board", "simulate", "--board", "uno"], stdout=subprocess.PIPE
    )
    try:
        assert sim.stdout is not None
        select.select([sim.stdout], [], [], 180)
        port = sim.stdout.readline().decode().strip()
        for baud in [int(b) for b in args.bauds.split(",")]:
            rc, out = cli("flash", MODEL, "--board", "uno", "--port", port, "--baud", str(baud), "--json")
            if rc != 0:
                print(json.dumps({"baud": baud, "flash": "failed"}))
                continue
            facts = json.loads(out)
            t0 = time.perf_counter()
            rc, out = cli(
                "verify", MODEL, "--port", port, "--baud", str(baud), "--input", str(d / "x.npy"),
                "--json", str(d / "v.json"), "--retries", "2",
            )  # fmt: skip
            wall = time.perf_counter() - t0
            rep = json.loads((d / "v.json").read_text()) if rc in (0, 1) else {}
            link = rep.get("link", {})
            print(
                json.dumps(
                    {
                        "baud": baud,
                        "upload_s": facts["upload_s"],
                        "image_flash_bytes": facts["image_flash_bytes"],
                        "agent_flash_bytes": facts["agent_flash_bytes"],
                        "agent_sram_bytes": facts["agent_sram_bytes"],
                        "sram_needed_bytes": facts["sram_needed_bytes"],
                        "verify_exit": rc,
                        "images": args.images,
                        "images_per_s": link.get("inputs_per_second"),
                        "retries": link.get("retries"),
                        "verify_wall_s": round(wall, 1),
                    }
                ),
                flush=True,
            )
    finally:
        sim.terminate()
        sim.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main_())
