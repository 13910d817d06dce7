"""``ebnn-gen ddnn system``: every tier its own OS process, over the broker given.

:func:`run_system` starts one ``ebnn-gen ddnn serve`` process per device, one
gateway and ``clouds`` clouds (``python -m ebnn_codegen.cli``), waits until
each has published its ``online`` status, then streams the dataset: the
source publishes each device's view of sample ``i`` (sequence number
``(seq_start + i) mod 65536``) at ``rate`` samples/s (default: as fast as the
system keeps up, with at most ``window`` samples unanswered), and the sink
records the first final answer of every sample and counts any further one.
``fail = (D, N)`` SIGKILLs device D's process once samples 0..N-1 have been
fed (samples N.. are fed after the kill; the source no longer feeds D).  The
run ends when every sample is answered, or when no answer came for
``stall_s`` seconds; then every tier gets SIGTERM and reports its counters.

The report has the ``ddnn eval`` keys measured on the network's answers
(``overall_accuracy``, ``local_exit_fraction``, ``exit_fraction``,
``exited_accuracy``, ``bytes_per_sample``), the keys that need every tier
to see every sample (``exit_accuracy``, ``device_accuracy``, and with
``fail`` ``device_failure`` for that device) from the offline staged run on
the same data (unless ``compare`` is off), and: ``samples``, ``answered``, ``answered_twice``,
``unanswered``, ``throughput_samples_per_s``, ``latency_ms`` (p50/p99 per exit,
source publish -> sink receipt), ``bytes_on_wire`` (payload and MQTT
overhead, counted by the clients), ``messages_rejected`` (by reason, summed
over the tiers, and per tier) and ``offline`` (how many answers equal offline
``ddnn eval --devices c``; with ``fail``, samples N.. are compared with
offline ``--fail D`` and samples still unanswered at the kill may equal either).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CodegenError, ToolError
from ..messages import MessageError
from . import wire
from .tiers import DEFAULT_DEADLINE_S, DEFAULT_RETRY_S, check_model
from .transport import BrokerOptions, MqttTransport

DEFAULT_WINDOW = 32
READY_TIMEOUT_S = 180.0


@dataclass
class SystemOptions:
    broker_url: str
    broker: BrokerOptions
    rate: float | None = None
    limit: int | None = None
    fail: tuple[int, int] | None = None
    clouds: int = 1
    deadline: float = DEFAULT_DEADLINE_S
    retry: float = DEFAULT_RETRY_S
    window: int = DEFAULT_WINDOW
    system: str | None = None
    seq_start: int = 0
    stall_s: float | None = None
    compare: bool = True
    gateway_impl: str = "c"
    credentials: list[str] = field(default_factory=list)  # --username ... args passed to every tier
    restart: list[tuple[str, int]] = field(default_factory=list)  # (tier, after N samples fed): SIGTERM + start again


def parse_fail(text: str, devices: int) -> tuple[int, int]:
    try:
        d, n = (int(x) for x in text.split("@"))
    except ValueError:
        raise CodegenError(f"--fail {text!r}: expected D@N (device D dies after sample N)") from None
    if not 0 <= d < devices:
        raise CodegenError(f"--fail {text}: the model has devices 0..{devices - 1}")
    if n < 0:
        raise CodegenError(f"--fail {text}: N must be >= 0")
    return d, n


class Sink:
    """Records the first answer per sample (by sample index), counts duplicates and second answers."""

    def __init__(self, n: int, seq_start: int, classes: int, exits: int, devices: int) -> None:
        self.n, self.seq_start = n, seq_start
        self.classes, self.exits, self.devices = classes, exits, devices
        self.unwrap = wire.SeqUnwrap(max_ahead=wire.HALF - 1)
        self.unwrap.top = seq_start
        self.pred = np.full(n, -1, np.int64)
        self.exit = np.full(n, -1, np.int64)
        self.mask = np.zeros(n, np.int64)
        self.t = np.zeros(n)
        self.sender: list[tuple[str, int] | None] = [None] * n
        self.seen: set[tuple[str, int, int]] = set()
        self.answered = 0
        self.answered_twice = 0
        self.transport_duplicates = 0
        self.rejected: dict[str, int] = {}
        self.event = threading.Event()
        self.lock = threading.Lock()

    def on_answer(self, t: wire.Topic, payload: bytes, now: float) -> None:
        with self.lock:
            try:
                seq, pred, ex, mask = wire.decode_answer(payload, self.classes, self.exits, self.devices)
                i = self.unwrap.peek(seq) - self.seq_start
                if not 0 <= i < self.n:
                    raise MessageError("unexpected", f"answer for sample {seq}, which was not fed")
            except MessageError as exc:
                self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
                return
            key = (t.tier, t.ident, i)
            if key in self.seen:
                self.transport_duplicates += 1  # the same answer again (QoS 1 redelivery, a restarted tier)
                return
            self.seen.add(key)
            if self.pred[i] >= 0:
                self.answered_twice += 1
                return
            self.pred[i], self.exit[i], self.mask[i], self.t[i] = pred, ex, mask, now
            self.sender[i] = (t.tier, t.ident)
            self.answered += 1
            self.event.set()


def _percentiles(ms: np.ndarray) -> dict[str, Any]:
    if not len(ms):
        return {"p50": None, "p99": None, "count": 0}
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "count": int(len(ms))}


class Cluster:
    """The tier processes of one system run."""

    def __init__(self, model_path: str, opts: SystemOptions, system: str, workdir: Path, log) -> None:
        self.model_path, self.opts, self.system, self.workdir, self.log = model_path, opts, system, workdir, log
        self.procs: dict[tuple[str, int], subprocess.Popen] = {}
        self.logs: dict[tuple[str, int], Path] = {}
        self.starts: dict[tuple[str, int], int] = {}
        self.signalled: set[int] = set()

    def command(self, tier: str, ident: int) -> list[str]:
        o = self.opts
        cmd = [sys.executable, "-m", "ebnn_codegen.cli", "--quiet", "ddnn", "serve", tier, self.model_path]
        cmd += ["--broker", o.broker_url, "--system", self.system, *o.credentials]
        key = (tier, ident)
        n = self.starts.get(key, 0)
        cmd += ["--stats-json", str(self.workdir / f"{tier}{ident}.{n}.json")]
        if n == 0:
            cmd.append("--clean-start")
        if tier == "device":
            cmd += ["--device", str(ident)]
        else:
            cmd += ["--id", str(ident)]
        if tier == "gateway":
            cmd += ["--deadline-ms", str(int(round(o.deadline * 1000))), "--gateway-impl", o.gateway_impl]
            cmd += ["--job-retry-ms", str(int(round(o.retry * 1000)))]
        return cmd

    def start(self, tier: str, ident: int) -> None:
        key = (tier, ident)
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        root = str(Path(__file__).resolve().parents[3])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        logf = self.workdir / f"{tier}{ident}.{self.starts.get(key, 0)}.log"
        self.logs[key] = logf
        with open(logf, "wb") as f:
            self.procs[key] = subprocess.Popen(self.command(tier, ident), stdout=f, stderr=subprocess.STDOUT, env=env)
        self.starts[key] = self.starts.get(key, 0) + 1

    def check_alive(self) -> None:
        for key, p in self.procs.items():
            if p.poll() is not None and p.returncode not in (0, -signal.SIGKILL):
                tail = self.logs[key].read_text(errors="replace").strip().splitlines()[-5:]
                raise ToolError(f"the {key[0]} {key[1]} process exited with {p.returncode}: " + " | ".join(tail))

    def kill(self, key: tuple[str, int]) -> None:
        self.procs[key].send_signal(signal.SIGKILL)
        self.procs[key].wait()

    def terminate(self, key: tuple[str, int], timeout: float = 60.0) -> None:
        p = self.procs[key]
        if p.poll() is None:
            if p.pid not in self.signalled:
                p.send_signal(signal.SIGTERM)
                self.signalled.add(p.pid)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self) -> None:
        """SIGTERM every process once (a second one during its exit would kill it), then wait for each."""
        for p in self.procs.values():
            if p.poll() is None and p.pid not in self.signalled:
                p.send_signal(signal.SIGTERM)
                self.signalled.add(p.pid)
        for key in self.procs:
            self.terminate(key)

    def exits(self) -> dict[str, Any]:
        """Per process started: its exit code and, unless 0, the end of its output."""
        out: dict[str, Any] = {}
        for (tier, ident), p in self.procs.items():
            name = f"{tier}{ident}.{self.starts[(tier, ident)] - 1}"
            entry: dict[str, Any] = {"returncode": p.returncode}
            if p.returncode not in (0, None):
                entry["log_tail"] = self.logs[(tier, ident)].read_text(errors="replace").strip().splitlines()[-8:]
            out[name] = entry
        return out

    def stats(self) -> list[dict[str, Any]]:
        import json

        out = []
        for f in sorted(self.workdir.glob("*.json")):
            try:
                out.append(json.loads(f.read_text()))
            except (OSError, ValueError):
                pass
        return out


def run_system(model_path: str, dataset: str, opts: SystemOptions, log=None) -> dict[str, Any]:
    """Start the tiers, stream the dataset, stop everything; the report (see the module docstring)."""
    from ... import api
    from .. import datasets
    from ..model import DDNN

    say = log or (lambda _m: None)
    model = api.load(model_path)
    if not isinstance(model, DDNN):
        raise CodegenError(f"{model_path}: a single device section, not a DDNN")
    check_model(model)
    dn = model.num_devices
    if opts.fail is not None and not 0 <= opts.fail[0] < dn:
        raise CodegenError(f"--fail: the model has devices 0..{dn - 1}")
    if opts.rate is not None and not opts.rate > 0:
        raise CodegenError(f"--rate must be > 0 samples/s, got {opts.rate}")
    if not 1 <= opts.window <= 4096:
        raise CodegenError(f"--window must be in 1..4096, got {opts.window}")
    if not 1 <= opts.clouds <= 16:
        raise CodegenError(f"--clouds must be in 1..16, got {opts.clouds}")
    if not 0 <= opts.seq_start < wire.SEQ_MOD:
        raise CodegenError(f"--seq-start must be in 0..65535, got {opts.seq_start}")
    data = datasets.load(dataset, "test", n=opts.limit)
    want = (dn, *model.spec.device.input_shape)
    if tuple(data.x.shape[1:]) != want:
        raise CodegenError(f"dataset {dataset} has views {data.x.shape[1:]}, the model takes {want}")
    n = len(data)
    system = wire.check_system(opts.system or f"ddnn-{secrets.token_hex(4)}")
    absent = set(int(d) for d in model.config["training"]["absent_devices"])
    live = [d for d in range(dn) if d not in absent]
    if opts.fail is not None and opts.fail[0] in absent:
        raise CodegenError(f"--fail: device {opts.fail[0]} is absent from this model (training.absent_devices)")
    names = model.spec.exit_names
    stall = opts.stall_s if opts.stall_s is not None else max(30.0, 10 * opts.deadline)

    with tempfile.TemporaryDirectory(prefix="ebnn-ddnn-") as tmp:
        cluster = Cluster(model_path, opts, system, Path(tmp), say)
        sink = Sink(n, opts.seq_start, model.num_classes, len(names), dn)
        online: dict[tuple[str, int], bool] = {}
        client = MqttTransport(opts.broker, f"{system}-source", clean_start=True, manual_ack=False)

        status_filter = f"{wire.PREFIX}/{system}/+/+/status"
        answer_filters = [wire.topic(system, "gateway", "+", "answer")]
        try:
            client.connect([status_filter, *answer_filters])

            def pump(stop: threading.Event) -> None:
                while not stop.is_set():
                    for topic_name, payload, _ in client.receive(0.1):
                        try:
                            t = wire.parse_topic(topic_name)
                        except MessageError:
                            continue
                        if t.kind == "status":
                            online[(t.tier, t.ident)] = payload == wire.ONLINE
                        elif t.kind == "answer":
                            sink.on_answer(t, payload, time.monotonic())

            stop_pump = threading.Event()
            pumper = threading.Thread(target=pump, args=(stop_pump,), daemon=True)
            pumper.start()
            tiers = [("device", d) for d in live] + [("gateway", 0)] + [("cloud", c) for c in range(opts.clouds)]
            say(f"[1/3] start {len(tiers)} tier processes (system {system})")
            for key in tiers:
                cluster.start(*key)
            t_end = time.monotonic() + READY_TIMEOUT_S
            while not all(online.get(k) for k in tiers):
                cluster.check_alive()
                if time.monotonic() > t_end:
                    raise ToolError(
                        f"tiers not online after {READY_TIMEOUT_S:.0f} s: {[k for k in tiers if not online.get(k)]}"
                    )
                time.sleep(0.05)

            say(f"[2/3] stream {n} samples" + (f" at {opts.rate:g}/s" if opts.rate else ""))
            t_sent = np.zeros(n)
            feeding = set(live)
            unanswered_at_kill: np.ndarray | None = None
            restarts = sorted(opts.restart, key=lambda r: r[1])
            restarters: list[threading.Thread] = []
            t0 = time.monotonic()
            for i in range(n):
                if opts.fail is not None and i == opts.fail[1]:
                    unanswered_at_kill = np.flatnonzero(sink.pred[:i] < 0)
                    cluster.kill(("device", opts.fail[0]))
                    feeding.discard(opts.fail[0])
                    say(f"      SIGKILL device {opts.fail[0]} after sample {i}")
                while restarts and restarts[0][1] == i:
                    what = restarts.pop(0)[0]
                    th = threading.Thread(target=_restart, args=(cluster, what, say), daemon=True)
                    th.start()
                    restarters.append(th)
                if opts.rate:
                    delay = t0 + i / opts.rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                while i - sink.answered >= opts.window:
                    sink.event.clear()
                    if not sink.event.wait(stall):
                        break
                    if i % 256 == 0:
                        cluster.check_alive()
                seq = (opts.seq_start + i) & 0xFFFF
                t_sent[i] = time.monotonic()
                for d in feeding:
                    client.send(wire.topic(system, "source", d, "view"), wire.encode_view(seq, data.x[i, d].tobytes()))
            last = sink.answered
            while sink.answered < n:
                sink.event.clear()
                if not sink.event.wait(stall) and sink.answered == last:
                    say(f"      no answer for {stall:g} s: {n - sink.answered} samples unanswered")
                    break
                last = sink.answered
            t_done = time.monotonic()
            for th in restarters:
                th.join()
            time.sleep(0.2)  # late duplicates, second answers
            say("[3/3] stop the tiers")
            cluster.stop_all()
            time.sleep(0.2)
            stop_pump.set()
            pumper.join()
            client.close()
        finally:
            cluster.stop_all()
            client.client.loop_stop()
        tier_stats = cluster.stats()
        exits = cluster.exits()
    src_wire = client.wire.as_dict()
    report = _report(model, data, opts, sink, t_sent, t_done, tier_stats, src_wire, system, names)
    report["processes"] = exits
    if opts.compare:
        _compare(model, data, opts, sink, report, unanswered_at_kill)
    return report


def _restart(cluster: Cluster, what: str, say) -> None:
    """SIGTERM a tier (``gateway``, ``cloud0``, ...) and start it again on its persistent session."""
    tier = what.rstrip("0123456789")
    ident = int(what[len(tier) :] or 0)
    cluster.terminate((tier, ident))
    say(f"      restarted {tier} {ident}")
    cluster.start(tier, ident)


def _report(model, data, opts, sink: Sink, t_sent, t_done, tier_stats, src_wire, system, names) -> dict[str, Any]:
    n = sink.n
    ok = sink.pred >= 0
    y = data.y
    lat = (sink.t - t_sent) * 1000.0
    exit_fraction = {name: float(np.mean(sink.exit == k)) for k, name in enumerate(names)}
    exited = {}
    latency = {}
    for k, name in enumerate(names):
        sel = sink.exit == k
        exited[name] = float(np.mean(sink.pred[sel] == y[sel])) if sel.any() else None
        latency[name] = _percentiles(lat[sel])
    latency["all"] = _percentiles(lat[ok])
    if opts.fail is not None:
        after = ok & (np.arange(n) >= opts.fail[1])
        latency["after_failure"] = {**_percentiles(lat[after]), "max": float(lat[after].max()) if after.any() else None}
    rejected: dict[str, int] = {}
    by_tier: dict[str, dict[str, int]] = {}
    wire_kinds: dict[str, dict[str, int]] = {}
    gateway_in: dict[str, int] = {}
    for st in tier_stats:
        name = f"{st['tier']}{st['id']}"
        for reason, c in st["rejected"].items():
            rejected[reason] = rejected.get(reason, 0) + c
            by_tier.setdefault(name, {})[reason] = by_tier.get(name, {}).get(reason, 0) + c
        for kind, counts in st["wire"].items():
            agg = wire_kinds.setdefault(kind, {})
            for k, v in counts.items():
                agg[k] = agg.get(k, 0) + v
        if st["tier"] == "gateway":
            for kind in ("scores", "features"):
                gateway_in[kind] = gateway_in.get(kind, 0) + st["wire"].get(kind, {}).get("in_payload", 0)
    for kind, counts in src_wire.items():
        agg = wire_kinds.setdefault(kind, {})
        for k, v in counts.items():
            agg[k] = agg.get(k, 0) + v
    for reason, c in sink.rejected.items():
        rejected[reason] = rejected.get(reason, 0) + c
        by_tier.setdefault("sink", {})[reason] = c
    ddnn_kinds = ("scores", "features", "request", "job", "answer")
    payload = sum(wire_kinds.get(k, {}).get(f"{d}_payload", 0) for k in ddnn_kinds for d in ("out", "in"))
    overhead = sum(wire_kinds.get(k, {}).get(f"{d}_overhead", 0) for k in ddnn_kinds for d in ("out", "in"))
    raw = data.raw_bytes_per_sample
    to_agg = gateway_in.get("scores", 0) / max(n, 1)
    to_cloud = gateway_in.get("features", 0) / max(n, 1)
    total = to_agg + to_cloud
    span = (max(sink.t[ok]) if ok.any() else t_done) - (t_sent[0] if n else t_done)
    return {
        "model": model.name,
        "dataset": data.name,
        "split": data.split,
        "system": system,
        "broker": opts.broker_url,
        "devices": "c",
        "gateway": opts.gateway_impl,
        "clouds": opts.clouds,
        "rate": opts.rate,
        "window": opts.window,
        "deadline_ms": opts.deadline * 1000.0,
        "seq_start": opts.seq_start,
        "fail": None if opts.fail is None else {"device": opts.fail[0], "after_sample": opts.fail[1]},
        "thresholds": {k: v for k, v in model.calibration.thresholds if k in names},
        "samples": n,
        "answered": int(sink.answered),
        "answered_twice": int(sink.answered_twice),
        "unanswered": int(n - sink.answered),
        "duplicate_answers_dropped": int(sink.transport_duplicates),
        "overall_accuracy": float(np.mean(sink.pred == y)) if n else 0.0,
        "local_exit_fraction": exit_fraction.get("local", 0.0),
        "exit_fraction": exit_fraction,
        "exited_accuracy": exited,
        "bytes_per_sample": {
            "to_aggregator": to_agg,
            "to_cloud": to_cloud,
            "total": total,
            "raw": float(raw),
            "reduction": float(raw / total) if total > 0 else None,
        },
        "throughput_samples_per_s": float(sink.answered / span) if span > 0 else None,
        "seconds": float(span),
        "latency_ms": latency,
        "bytes_on_wire": {
            "per_sample": {"payload": payload / max(n, 1), "mqtt_overhead": overhead / max(n, 1)},
            "total": {"payload": payload, "mqtt_overhead": overhead},
            "by_kind": wire_kinds,
            "source_views_per_sample": wire_kinds.get("view", {}).get("out_payload", 0) / max(n, 1),
            "raw_upload_per_sample": float(raw),
            "counted": "by the clients from MQTT 5 packet sizes, both hops (publisher->broker, broker->subscriber); "
            "per_sample covers scores, features, request, job and answer (not the source's views, status, "
            "CONNECT/SUBSCRIBE/PING); a SIGKILLed process reports nothing",
        },
        "messages_rejected": rejected,
        "messages_rejected_by_tier": by_tier,
        "tiers": tier_stats,
        "answers": {"pred": sink.pred.tolist(), "exit": sink.exit.tolist()},
    }


def _compare(model, data, opts, sink: Sink, report: dict[str, Any], unanswered_at_kill) -> None:
    """Offline ``ddnn eval --devices c`` on the same samples, and the per-sample comparison."""
    from ..metrics import device_accuracy
    from ..runtime import StagedRuntime

    rt = StagedRuntime(model, devices="c")
    stage = rt.device_stage(data)
    down = sorted(set(model.config["training"]["absent_devices"]))
    th = model.calibration.threshold_map()
    base = rt.run(stage, th, failed=down)
    every = rt.run(stage, {name: 0.0 for name in th}, failed=down)
    dev_all, dev_present = device_accuracy(stage, model.num_classes)
    report["exit_accuracy"] = every.reached_accuracy()
    report["device_accuracy"] = dev_all
    report["device_accuracy_present"] = dev_present
    report["best_device_accuracy"] = max(dev_all)
    report["device_failure"] = []
    ref_pred, ref_exit = base.pred.copy(), base.exit_index.copy()
    alt = None
    n = len(data)
    if opts.fail is not None:
        d, k = opts.fail
        alt = rt.run(stage, th, failed=sorted({*down, d}))
        ref_pred[k:], ref_exit[k:] = alt.pred[k:], alt.exit_index[k:]
        report["device_failure"].append(
            {
                "device": d,
                "overall_accuracy": alt.overall_accuracy,
                "local_exit_fraction": alt.exit_fraction["local"],
                "bytes_per_sample": alt.bytes_per_sample()["total"],
                "note": "offline, device failed for every sample",
            }
        )
    same = (sink.pred == ref_pred) & (sink.exit == ref_exit)
    either = np.zeros(n, bool)
    in_flight = np.zeros(n, bool)
    if alt is not None and unanswered_at_kill is not None and len(unanswered_at_kill):
        idx = unanswered_at_kill
        in_flight[idx] = True
        either[idx] = ~same[idx] & (sink.pred[idx] == alt.pred[idx]) & (sink.exit[idx] == alt.exit_index[idx])
    # a sample in flight at the kill may also have had the device's scores but not its features
    mism = np.flatnonzero(~same & ~in_flight & (sink.pred >= 0))
    report["offline"] = {
        "compared": int(np.sum(sink.pred >= 0)),
        "equal": int(np.sum(same & (sink.pred >= 0))),
        "equal_to_failed_run_in_flight_at_kill": int(either.sum()),
        "in_flight_at_kill": int(in_flight.sum()),
        "in_flight_equal_to_neither": int(np.sum(in_flight & ~same & ~either & (sink.pred >= 0))),
        "mismatches": int(len(mism)),
        "first_mismatches": mism[:20].tolist(),
        "offline_overall_accuracy": float(np.mean(ref_pred == data.y)),
        "offline_bytes_per_sample": base.bytes_per_sample(),
    }
