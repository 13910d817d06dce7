"""``ebnn-gen ddnn serve`` and ``ebnn-gen ddnn system``: the DDNN's tiers as processes over MQTT.

    ebnn-gen ddnn serve device  MODEL --device D --broker mqtt://HOST:PORT [--port /dev/ttyACM0]
    ebnn-gen ddnn serve gateway MODEL --broker mqtt://HOST:PORT [--deadline-ms MS]
    ebnn-gen ddnn serve cloud   MODEL --broker mqtt://HOST:PORT [--id N]
    ebnn-gen ddnn system MODEL --dataset mnist-tiles --broker mqtt://127.0.0.1:PORT --json OUT.json
                         [--rate R] [--limit N] [--fail D@N] [--clouds K]

Thin shells over :mod:`ebnn_codegen.ddnn.net` (docs/ddnn.md, "Deployment over MQTT").
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from ..errors import CodegenError
from .base import UsageError, emit_json, output_file, progress

TIER_NAMES = ("device", "gateway", "cloud")


def _add_broker(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, metavar="URL", help="mqtt://HOST:PORT or mqtts://HOST:PORT (TLS)")
    p.add_argument("--system", default=None, metavar="NAME", help="system name in the topics (default: ddnn)")
    g = p.add_argument_group("MQTT credentials and TLS")
    g.add_argument("--username", default=None)
    g.add_argument("--password-file", default=None, metavar="FILE", help="first line: the password")
    g.add_argument("--cafile", default=None, metavar="PEM", help="CA certificates (turns TLS on)")
    g.add_argument("--certfile", default=None, metavar="PEM", help="client certificate (with --keyfile)")
    g.add_argument("--keyfile", default=None, metavar="PEM", help="client private key")
    g.add_argument("--tls-insecure", action="store_true", help="do not check the broker's host name")


def _broker(args: argparse.Namespace):
    from ..ddnn.net.transport import parse_broker

    return parse_broker(
        args.broker,
        username=args.username,
        password_file=args.password_file,
        cafile=args.cafile,
        certfile=args.certfile,
        keyfile=args.keyfile,
        tls_insecure=args.tls_insecure or None,
    )


def _credential_args(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    for name in ("username", "password_file", "cafile", "certfile", "keyfile"):
        v = getattr(args, name)
        if v is not None:
            out += [f"--{name.replace('_', '-')}", str(v)]
    if args.tls_insecure:
        out.append("--tls-insecure")
    return out


def _deadline(ms: float) -> float:
    if not 0 < ms <= 600_000:
        raise UsageError(f"--deadline-ms must be in (0, 600000], got {ms:g}")
    return ms / 1000.0


def _load(path: str):
    from .ddnn_common import load_ddnn

    return load_ddnn(path)


def _board_runner(port: str, model, device: int):
    """``--port``: the device tier's section runs on a board flashed with it (``ebnn-gen flash``)."""
    from ..ddnn.net.tiers import board_runner

    return board_runner(model, device, port)


class Serve:
    help = "run one tier (device, gateway or cloud) as a process on an MQTT broker until stopped"

    def add(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("tier", choices=TIER_NAMES)
        p.add_argument("model", metavar="MODEL.pt")
        _add_broker(p)
        p.add_argument("--device", type=int, default=None, metavar="D", help="device tier: which device")
        p.add_argument("--port", default=None, metavar="DEV", help="device tier: drive a board on this serial port")
        p.add_argument("--id", type=int, default=0, help="gateway / cloud id in the topics (default 0)")
        p.add_argument(
            "--deadline-ms",
            type=float,
            default=2000.0,
            metavar="MS",
            help="gateway: a device that has not reported MS after a sample's first message is missing for it (default 2000)",
        )
        p.add_argument(
            "--gateway-impl", default="c", choices=("c", "python"), help="gateway: generated C (default) or Python"
        )
        p.add_argument(
            "--job-retry-ms",
            type=float,
            default=10000.0,
            metavar="MS",
            help="gateway: publish a job again when no cloud answered it in MS (default 10000)",
        )
        p.add_argument("--threshold", type=float, default=None, metavar="T", help="gateway: local exit threshold")
        p.add_argument("--client-id", default=None, help="MQTT client id (default: SYSTEM-TIER-ID)")
        p.add_argument("--clean-start", action="store_true", help="discard this client's persistent session")
        p.add_argument(
            "--session-expiry", type=int, default=3600, metavar="S", help="persistent session lifetime (default 3600 s)"
        )
        p.add_argument("--stats-json", default=None, metavar="OUT.json", help="write the tier's counters on exit")

    def run(self, args: argparse.Namespace) -> int:
        from ..ddnn.net import wire
        from ..ddnn.net.serve import serve, write_stats
        from ..ddnn.net.tiers import make_tier
        from ..ddnn.net.transport import MqttTransport

        opts = _broker(args)
        if not 0 <= args.session_expiry <= 0xFFFFFFFF:
            raise UsageError("--session-expiry must be in 0..4294967295")
        opts.session_expiry = args.session_expiry
        system = args.system or "ddnn"
        try:
            wire.check_system(system)
        except CodegenError as exc:
            raise UsageError(f"--system: {exc}") from None
        if args.stats_json:
            output_file(args.stats_json)
        tier_opts: dict = {}
        if args.tier == "device":
            if args.device is None:
                raise UsageError("serve device needs --device D")
            tier_opts["device"] = args.device
        elif args.device is not None or args.port is not None:
            raise UsageError("--device and --port are for the device tier")
        if not 0 <= args.id < 1000:
            raise UsageError(f"--id must be in 0..999, got {args.id}")
        if args.tier in ("gateway", "cloud"):
            tier_opts["ident"] = args.id
        if args.tier == "gateway":
            tier_opts["deadline"] = _deadline(args.deadline_ms)
            tier_opts["decision"] = args.gateway_impl
            tier_opts["threshold"] = args.threshold
            tier_opts["retry"] = _deadline(args.job_retry_ms)
        model = _load(args.model)
        if args.tier == "device" and args.port is not None:
            tier_opts["runner"] = _board_runner(args.port, model, int(args.device or 0))
        ident = args.device if args.tier == "device" else args.id
        client_id = args.client_id or f"{system}-{args.tier}-{ident}"
        transport = MqttTransport(opts, client_id, clean_start=args.clean_start)
        tier = make_tier(args.tier, model, system, transport.send, transport.ack, **tier_opts)
        stop = threading.Event()
        got: list[int] = []

        def on_signal(signum, _frame) -> None:
            got.append(signum)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        log = progress(args)
        if log:
            log(f"{args.tier} {ident} of {model.name} on {args.broker} (system {system}, client {client_id})")
        stats = serve(tier, transport, stop)
        write_stats(args.stats_json, stats)
        if log:
            log(
                f"{args.tier} {ident} stopped: {stats['received']} messages in, {stats['published']} out, rejected {stats['rejected']}"
            )
        return 130 if got and got[0] == signal.SIGINT else 0


class System:
    help = "every tier as its own process on an MQTT broker: stream a dataset, report answers, latency, bytes"

    def add(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("model", metavar="MODEL.pt")
        p.add_argument("--dataset", required=True, metavar="NAME", help="mnist-tiles, mvmc-like, ... (test split)")
        _add_broker(p)
        p.add_argument("--json", required=True, metavar="OUT.json", help="write the report as JSON")
        p.add_argument(
            "--rate", type=float, default=None, metavar="R", help="samples/s (default: as fast as it keeps up)"
        )
        p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N samples")
        p.add_argument("--fail", default=None, metavar="D@N", help="SIGKILL device D's process after sample N")
        p.add_argument(
            "--clouds", type=int, default=1, metavar="K", help="cloud processes sharing the work (default 1)"
        )
        p.add_argument(
            "--deadline-ms",
            type=float,
            default=2000.0,
            metavar="MS",
            help="the gateway's per-sample deadline (default 2000)",
        )
        p.add_argument(
            "--job-retry-ms",
            type=float,
            default=10000.0,
            metavar="MS",
            help="the gateway's job retry time (default 10000)",
        )
        p.add_argument("--window", type=int, default=32, metavar="W", help="at most W samples unanswered (default 32)")
        p.add_argument(
            "--seq-start", type=int, default=0, metavar="S", help="first sequence number (to cross the 16-bit wrap)"
        )
        p.add_argument("--gateway-impl", default="c", choices=("c", "python"))
        p.add_argument(
            "--restart",
            action="append",
            default=[],
            metavar="TIER@N",
            help="SIGTERM and restart TIER (gateway, cloud0, ...) after sample N (repeatable)",
        )
        p.add_argument("--stall-s", type=float, default=None, metavar="S", help="give up after S s without an answer")
        p.add_argument("--no-compare", action="store_true", help="skip the offline comparison (ddnn eval --devices c)")

    def run(self, args: argparse.Namespace) -> int:
        from ..ddnn.net.system import SystemOptions, run_system

        output_file(args.json)
        opts = SystemOptions(args.broker, _broker(args))
        if args.system is not None:
            opts.system = args.system
        opts.rate, opts.limit, opts.clouds, opts.window = args.rate, args.limit, args.clouds, args.window
        opts.deadline = _deadline(args.deadline_ms)
        opts.retry = _deadline(args.job_retry_ms)
        opts.seq_start, opts.gateway_impl, opts.stall_s = args.seq_start, args.gateway_impl, args.stall_s
        opts.compare = not args.no_compare
        opts.credentials = _credential_args(args)
        if args.limit is not None and args.limit < 1:
            raise UsageError(f"--limit must be >= 1, got {args.limit}")
        for r in args.restart:
            tier, _, n = r.partition("@")
            if tier.rstrip("0123456789") not in ("gateway", "cloud") or not n.isdigit():
                raise UsageError(f"--restart {r!r}: expected gateway@N or cloudK@N")
            opts.restart.append((tier, int(n)))
        if args.fail is not None:
            model = _load(args.model)
            from ..ddnn.net.system import parse_fail

            opts.fail = parse_fail(args.fail, model.num_devices)
        rep = run_system(args.model, args.dataset, opts, log=progress(args))
        emit_json(rep, args.json)
        lat = rep["latency_ms"]
        print(
            f"{rep['answered']}/{rep['samples']} answered ({rep['answered_twice']} twice), "
            f"{rep['throughput_samples_per_s'] or 0:.1f} samples/s, overall accuracy {rep['overall_accuracy']:.4f}, "
            f"local exits {100 * rep['local_exit_fraction']:.2f} %, latency p50/p99 "
            + ", ".join(f"{k} {v['p50'] or 0:.1f}/{v['p99'] or 0:.1f} ms" for k, v in lat.items())
        )
        if "offline" in rep:
            o = rep["offline"]
            print(f"offline comparison: {o['equal']} of {o['compared']} equal, {o['mismatches']} mismatches")
        if rep["messages_rejected"]:
            print(f"rejected messages: {rep['messages_rejected']}", file=sys.stderr)
        bad = rep["answered"] != rep["samples"] or rep["answered_twice"] or rep.get("offline", {}).get("mismatches")
        return 1 if bad else 0
