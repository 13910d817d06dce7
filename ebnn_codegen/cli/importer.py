"""``ebnn-gen import``: an ONNX or QONNX model -> an ebnn-codegen checkpoint.

Also the ``verify --against`` helper (the generated C vs the source model's own runtime).
"""

from __future__ import annotations

import argparse
import math

from .. import api, importers
from ..errors import CodegenError
from .base import Command, emit_json, output_file, progress


def _finite(text: str) -> float:
    """A finite number, or a fraction ``a/b`` (``1/255``)."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


class Import(Command):
    name = "import"
    help = "import a binarized ONNX or QONNX model (Brevitas, torch.onnx.export) as a checkpoint"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("source", metavar="MODEL.onnx", help="ONNX or QONNX file")
        p.add_argument("-o", "--output", required=True, metavar="MODEL.pt", help="checkpoint to write")
        p.add_argument(
            "--input-scale",
            type=_finite,
            default=1.0,
            metavar="S",
            help="the source's float input is S * pixel + O for uint8 pixels (default 1; a fraction like 1/255 works)",
        )
        p.add_argument("--input-offset", type=_finite, default=0.0, metavar="O", help="see --input-scale (default 0)")
        p.add_argument("--name", help="the model's C name (default: from the file name)")
        p.add_argument("--json", action="store_true", help="print what was imported as JSON")

    def run(self, args: argparse.Namespace) -> int:
        out = output_file(args.output)
        log = progress(args)
        if args.input_scale == 0:
            raise CodegenError("--input-scale must not be 0")
        result = importers.import_model(
            args.source, input_scale=args.input_scale, input_offset=args.input_offset, name=args.name
        )
        api.save(result.model, out)
        if args.json:
            emit_json({"checkpoint": str(out), "format": result.source_format, "blocks": result.blocks})
            return 0
        if log:
            for i, b in enumerate(result.blocks):
                extra = []
                if b.get("pool"):
                    extra.append(f"max-pool {b['pool']}")
                if b.get("flipped_channels"):
                    extra.append(f"{b['flipped_channels']} channels pool the minimum (weights negated)")
                log(
                    f'[import] block {i} ({b["type"]}) <- node "{b["node"]}" ({b["op"]})'
                    + (f": {', '.join(extra)}" if extra else "")
                )
        print(f"{args.source} ({result.source_format}) -> {out}: {len(result.blocks)} blocks")
        return 0


def verify_against(args: argparse.Namespace, x) -> int:
    """``verify --against``: print the report, exit 0 only if every compared bit and class is equal."""
    importers.require()
    from ..importers.verify import verify_against as _verify_against

    rep = _verify_against(
        args.model, args.against, x, samples=args.samples, target=args.target, kernels=args.kernels, seed=args.seed
    )
    print(rep.summary())
    if args.json:
        emit_json(rep.to_dict(), args.json)
    return 0 if rep.ok else 1
