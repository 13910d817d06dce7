"""The tiers' logic, once, for the offline staged runtime and the network processes alike.

A tier object never touches a socket: it is handed messages as ``(topic,
payload, token)`` and answers through two callables, ``send(topic, payload)``
and ``ack(token)``, that a transport provides (:mod:`.transport`: an
in-memory broker or an MQTT client).  ``token`` is the transport's handle
of the delivery; a tier acknowledges a message only once the work it
started is finished (its outputs published), so a tier process killed in
between gets the message again from a persistent session.

* :func:`device_outputs` -- a device section on a batch of views (generated
  C through the host build, or PyTorch): predictions, the message integers
  of its scores and its ±1 feature map.  :meth:`StagedRuntime.device_stage
  <ebnn_codegen.ddnn.runtime.StagedRuntime.device_stage>` calls it for
  every device; :class:`DeviceTier` for each batch of views it receives.
* :class:`CDecision` / :class:`PythonDecision` -- aggregate + exit decision
  of the gateway: the generated gateway C (``ddnn export``) or the Python
  :class:`~ebnn_codegen.ddnn.exits.LocalGateway` (float64).  On the shipped
  models' test sets they agree on every sample (tested).
* :func:`cloud_predict` -- the cloud tier on feature maps with a presence
  mask (the offline runtime and :class:`CloudTier`).
* :class:`GatewayTier` -- per sample: collect SCORES, decide when every
  expected device has reported or the deadline has passed (a device that
  has not reported is missing for that sample, exactly as offline
  ``--fail``), answer locally or request the devices' FEATURES and pass them
  on as one JOB to a cloud.  The gateway publishes every final answer (the
  local exit's, and the first cloud answer to each job): whatever the
  broker redelivers, the sink hears one sender per sample.  A device whose
  ``status`` has said ``offline`` (clean stop, or the broker's last will after a crash) for at least the
  deadline is not waited for, so that only the samples of the first deadline
  after a crash wait for it.  (Not sooner: mosquitto publishes every
  client's will when it shuts down, and after a broker restart the devices
  reconnect one by one; the statuses are forgotten when the gateway's own
  connection drops.)  A JOB stays open until a cloud's ANSWER to it comes
  back; without one for ``retry`` seconds (default 10) it is published again
  (mosquitto 2.0 does not keep shared subscriptions over a restart, so a job
  published before the clouds resubscribe is lost); a cloud answers a job it
  has already classified with its first answer again.

Limits: models with an edge tier are refused (:func:`check_model`); a device
keeps the feature maps of its last ``cache`` samples (default 8192) to
answer requests; a restarted device has lost them (the gateway's deadline
then drops that device from the sample's cloud job).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...errors import CodegenError
from ..exits import LocalGateway, argmax_first, normalized_entropy
from ..messages import (
    FEATURES,
    SCORES,
    MessageError,
    decode_message,
    encode_features_batch,
    encode_scores_batch,
    message_layout,
    quantize_fixed,
    quantize_float,
    unpack_features,
)
from ..model import DDNN
from . import wire

Send = Callable[[str, bytes], None]
Ack = Callable[[Any], None]
Delivery = tuple[str, bytes, Any]  # topic, payload, token

DEFAULT_DEADLINE_S = 2.0
DEFAULT_RETRY_S = 10.0
DEFAULT_CACHE = 8192


def check_model(model: DDNN) -> None:
    """The networked tiers support devices -> gateway (local exit) -> cloud (no edge tier)."""
    if model.spec.edge is not None:
        raise CodegenError("the networked DDNN runs devices, gateway and cloud; this model has an edge tier")
    model.calibration.frac_bits()  # a clear error for a model never calibrated


# --------------------------------------------------------------------------- devices


def device_outputs(
    model: DDNN,
    d: int,
    x: np.ndarray,
    mode: str,
    graph: Any = None,
    kernels: str = "fast",
    batch: int = 1024,
    lib: Any = None,
    run: Callable[[Any, np.ndarray], Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Device ``d`` on views ``x`` (N, C, H, W) uint8: (pred (N,), scores (N, K), q (N, K) int32, feats (N, C, H, W) int8 ±1).

    ``mode`` ``"c"``: the generated C (``graph``, the compiled section) through
    the host build, scores int32 fixed point (``lib``: the loaded host build,
    :func:`ebnn_codegen.targets.host.build`, to skip its lookup per call);
    ``"torch"``: PyTorch, float scores.  ``run(graph, x)``: another runner of the generated C
    than the host build (a board, :func:`board_runner`) giving the same RunResult.
    """
    n, k = len(x), model.num_classes
    fshape = model.spec.feature_shape
    bits = int(model.spec.config["messages"]["score_bits"])  # the spec: no copy of the config per batch
    m = model.calibration.score_frac_bits or 0
    fb = model.spec.feature_block
    x = np.ascontiguousarray(x)
    if mode == "c":
        from ...targets import host

        res = run(graph, x) if run is not None else host.run(graph, x, kernels=kernels, lib=lib)
        q = quantize_fixed(res.scores, int(graph.score_scale_log2), m, bits)
        return res.pred, res.scores, q, res.layers[fb].reshape(n, *fshape).astype(np.int8)
    pred = np.zeros(n, np.int64)
    scores = np.zeros((n, k), np.float32)
    q = np.zeros((n, k), np.int32)
    feats = np.zeros((n, *fshape), np.int8)
    with torch.no_grad():
        for i in range(0, n, batch):
            s, f = model.run_device(d, torch.from_numpy(x[i : i + batch]).float())
            sn = s.numpy()
            scores[i : i + batch] = sn
            pred[i : i + batch] = sn.argmax(axis=1)
            q[i : i + batch] = quantize_float(sn, m, bits)
            feats[i : i + batch] = f.numpy().reshape(len(sn), *fshape).astype(np.int8)
    return pred, scores, q, feats


def compile_device(model: DDNN, d: int) -> Any:
    from ...api import compile as compile_section

    return compile_section(model.device(0 if model.spec.share_weights else d))


# --------------------------------------------------------------------------- gateway decision


class PythonDecision:
    """Aggregate + exit in Python (float64), the offline runtime's gateway."""

    def __init__(self, model: DDNN, threshold: float) -> None:
        self.gw = LocalGateway(model)
        self.threshold = float(threshold)

    def decide(self, q: np.ndarray, present: np.ndarray) -> tuple[int, bool]:
        z, pred = self.gw.scores(q[None], present[None])
        return int(pred[0]), bool(normalized_entropy(z)[0] < self.threshold and present.any())


class CDecision:
    """Aggregate + exit by the generated gateway C (``ddnn export``), called through cffi."""

    def __init__(self, model: DDNN, threshold: float, graphs: dict[int, Any] | None = None) -> None:
        from ..export import build_gateway

        self.ffi, self.lib = build_gateway(model, graphs)
        self.fn = getattr(self.lib, f"{model.name}_local_exit")
        self.dtype = np.int8 if int(model.config["messages"]["score_bits"]) == 8 else np.int16
        self.threshold = float(threshold)
        self.result = self.ffi.new("local_result_t *")

    def decide(self, q: np.ndarray, present: np.ndarray) -> tuple[int, bool]:
        qq = np.ascontiguousarray(q, self.dtype).reshape(-1)
        pp = np.ascontiguousarray(present, np.uint8)
        rc = self.fn(
            self.ffi.from_buffer("score_t[]", qq), self.ffi.from_buffer("uint8_t[]", pp), self.threshold, self.result
        )
        if rc < 0:
            raise RuntimeError(f"gateway C returned error {rc}")
        return int(self.result.pred), bool(self.result.exit)


def make_decision(model: DDNN, kind: str, threshold: float | None = None):
    th = model.calibration.threshold("local") if threshold is None else float(threshold)
    if kind == "c":
        return CDecision(model, th)
    if kind == "python":
        return PythonDecision(model, th)
    raise CodegenError(f"gateway implementation must be c or python, got {kind!r}")


# --------------------------------------------------------------------------- cloud


def cloud_predict(model: DDNN, feats: np.ndarray, present: np.ndarray) -> np.ndarray:
    """The cloud's prediction (N,) from ±1/0 maps (N, D, C, H, W) and presence (N, D)."""
    with torch.no_grad():
        z = model.cloud(torch.from_numpy(np.ascontiguousarray(feats, np.float32)), torch.from_numpy(present))[0]
    return argmax_first(z.numpy())


# --------------------------------------------------------------------------- tier objects


@dataclass
class Counters:
    received: int = 0
    published: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {"received": self.received, "published": self.published, "rejected": dict(self.rejected)}


class Tier:
    """What every tier offers its transport loop."""

    name = "tier"

    def __init__(self, system: str, ident: int, send: Send, ack: Ack) -> None:
        self.system = wire.check_system(system)
        self.ident = ident
        self.send = send
        self.ack = ack
        self.counters = Counters()
        self.stopping = False

    def subscriptions(self) -> list[str]:
        raise NotImplementedError

    def status_topic(self) -> str:
        return wire.topic(self.system, self.name, self.ident, "status")

    def handle(self, batch: list[Delivery], now: float) -> None:
        raise NotImplementedError

    def tick(self, now: float) -> None:
        """Act on deadlines (default: none)."""

    def next_wakeup(self, now: float) -> float | None:
        """Seconds until :meth:`tick` has something to do (None: nothing pending)."""
        return None

    def reconnected(self, now: float) -> None:
        """The transport lost its connection and has it back (default: nothing to do)."""

    def busy(self) -> bool:
        """True while work it accepted is unfinished."""
        return False

    def stats(self) -> dict[str, Any]:
        return {"tier": self.name, "id": self.ident, **self.counters.as_dict()}

    def _publish(self, topic: str, payload: bytes) -> None:
        self.send(topic, payload)
        self.counters.published += 1

    def _reject(self, token: Any, reason: str) -> None:
        self.counters.reject(reason)
        self.ack(token)


def board_runner(
    model: DDNN, d: int, port: str, kernels: str = "fast"
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The device tier's runner (``DeviceTier(runner=...)``) on a board on ``port`` flashed with
    device ``d``'s section (``ebnn-gen flash``): the serial agent gives the same scores and
    feature bits as the host build.  Limit: each batch of views opens the port anew (an Arduino
    resets on opening: about the board's boot wait per batch)."""
    import os

    from ... import api

    if "://" not in port and not os.path.exists(port):
        raise CodegenError(f"--port {port}: no such serial port", hint="is the board plugged in? (ls /dev/ttyACM*)")
    graph = compile_device(model, d)
    opts = api.PortOptions(port)

    def on_board(g: Any, x: np.ndarray) -> Any:
        return api.board_run(g, x, opts, kernels=kernels)

    def runner(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, _, q, feats = device_outputs(model, d, x, "c", graph, kernels, run=on_board)
        return q, feats

    return runner


class DeviceTier(Tier):
    """End device D: a view in, a SCORES message out; its FEATURES message when the gateway asks."""

    name = "device"

    def __init__(
        self,
        model: DDNN,
        device: int,
        system: str,
        send: Send,
        ack: Ack,
        mode: str = "c",
        cache: int = DEFAULT_CACHE,
        runner: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
        build: tuple[Any, Any] | None = None,
    ) -> None:
        super().__init__(system, device, send, ack)
        check_model(model)
        if not 0 <= device < model.num_devices:
            raise CodegenError(f"--device {device}: the model has devices 0..{model.num_devices - 1}")
        self.model, self.mode = model, mode
        self.layout = message_layout(model)
        self.view_shape = tuple(model.spec.device.input_shape)
        self.view_bytes = int(np.prod(self.view_shape))
        self.graph: Any
        self.lib: Any
        self.graph, self.lib = build if build is not None else (None, None)  # (compiled section, loaded host build)
        if self.graph is None and mode == "c":
            self.graph = compile_device(model, device)
        if self.graph is not None and self.lib is None:
            from ...targets import host

            self.lib = host.build(self.graph)
        self.runner = runner  # (N, C, H, W) uint8 -> (q, feats): a board instead of the host build
        self.cache: OrderedDict[int, bytes] = OrderedDict()
        self.cache_size = cache

    def subscriptions(self) -> list[str]:
        return [
            wire.topic(self.system, "source", self.ident, "view"),
            wire.topic(self.system, "gateway", "+", "request"),
        ]

    def handle(self, batch: list[Delivery], now: float) -> None:
        views: list[tuple[int, bytes, Any]] = []
        requests: list[Delivery] = []
        for topic_name, payload, token in batch:
            self.counters.received += 1
            try:
                t = wire.parse_topic(topic_name)
                if t.kind == "view":
                    if t.tier != "source" or t.ident != self.ident:
                        raise MessageError("topic", f"view for another device on {topic_name}")
                    seq, view = wire.decode_view(payload, self.view_bytes)
                    views.append((seq, view, token))
                elif t.kind == "request" and t.tier == "gateway":
                    requests.append((topic_name, payload, token))
                else:
                    raise MessageError("unexpected", f"device does not take {topic_name}")
            except MessageError as exc:
                self._reject(token, exc.reason)
        if views:
            self._run(views)
        for _topic, payload, token in requests:
            try:
                seq, mask = wire.decode_request(payload, self.model.num_devices)
            except MessageError as exc:
                self._reject(token, exc.reason)
                continue
            if mask >> self.ident & 1:
                msg = self.cache.get(seq)
                if msg is None:
                    self._reject(token, "unexpected")  # a sample this device has not seen (or forgot)
                    continue
                self._publish(wire.topic(self.system, "device", self.ident, "features"), msg)
            self.ack(token)

    def _run(self, views: list[tuple[int, bytes, Any]]) -> None:
        seqs = np.array([s for s, _, _ in views], np.int64)
        x = np.frombuffer(b"".join(v for _, v, _ in views), np.uint8).reshape(len(views), *self.view_shape)
        if self.runner is not None:
            q, feats = self.runner(x)
        else:
            _, _, q, feats = device_outputs(self.model, self.ident, x, self.mode, self.graph, lib=self.lib)
        scores = encode_scores_batch(self.layout, self.ident, seqs, q)
        fmsgs = encode_features_batch(self.layout, self.ident, seqs, feats)
        out = wire.topic(self.system, "device", self.ident, "scores")
        for i, (seq, _, token) in enumerate(views):
            self.cache[seq] = fmsgs[i].tobytes()
            self.cache.move_to_end(seq)
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
            self._publish(out, scores[i].tobytes())
            self.ack(token)


@dataclass
class _Sample:
    u: int
    t0: float
    q: dict[int, np.ndarray] = field(default_factory=dict)
    tokens: list[Any] = field(default_factory=list)
    phase: str = "scores"  # then "features"
    mask: int = 0
    t_req: float = 0.0
    feats: dict[int, bytes] = field(default_factory=dict)
    job: bytes = b""
    t_job: float = 0.0


class GatewayTier(Tier):
    """The gateway: SCORES -> aggregate + local exit -> ANSWER, or REQUEST -> FEATURES -> JOB for a cloud."""

    name = "gateway"

    def __init__(
        self,
        model: DDNN,
        system: str,
        send: Send,
        ack: Ack,
        ident: int = 0,
        deadline: float = DEFAULT_DEADLINE_S,
        decision: str = "c",
        retry: float = DEFAULT_RETRY_S,
        threshold: float | None = None,
        max_ahead: int = 4096,
    ) -> None:
        super().__init__(system, ident, send, ack)
        check_model(model)
        if not deadline > 0:
            raise CodegenError(f"the deadline must be > 0 s, got {deadline}")
        self.model = model
        self.layout = message_layout(model)
        self.devices = model.num_devices
        self.classes = model.num_classes
        self.absent = set(int(d) for d in model.config["training"]["absent_devices"])
        self.offline_since: dict[int, float] = {}  # device -> when its status said offline
        self.deadline = float(deadline)
        if not retry > 0:
            raise CodegenError(f"the job retry time must be > 0 s, got {retry}")
        self.retry = float(retry)
        self.decision = make_decision(model, decision, threshold)
        self.unwrap = wire.SeqUnwrap(max_ahead)
        self.pending: dict[int, _Sample] = {}
        self.done: dict[int, tuple[int, int]] = {}  # u -> (scores mask, features mask) seen
        self.local_index = model.spec.exit_names.index("local")
        self.outcomes = {
            "local": 0,
            "cloud": 0,
            "deadline": 0,
            "deferred": 0,
            "job_retries": 0,
            "cloud_answers_dropped": 0,
        }

    def subscriptions(self) -> list[str]:
        return [
            wire.topic(self.system, "device", "+", "scores"),
            wire.topic(self.system, "device", "+", "features"),
            wire.topic(self.system, "device", "+", "status"),
            wire.topic(self.system, "cloud", "+", "answer"),
        ]

    def down(self, now: float) -> set[int]:
        """Devices whose status has said ``offline`` for at least the deadline (without a reconnection of ours)."""
        return {d for d, t in self.offline_since.items() if now - t >= self.deadline}

    def expected(self, now: float) -> set[int]:
        return set(range(self.devices)) - self.absent - self.down(now)

    def reconnected(self, now: float) -> None:
        """Our connection was lost: forget the statuses (the broker sends the retained ones again)."""
        self.offline_since.clear()

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "outcomes": dict(self.outcomes)}

    def busy(self) -> bool:
        return bool(self.pending)

    def handle(self, batch: list[Delivery], now: float) -> None:
        for topic_name, payload, token in batch:
            self.counters.received += 1
            try:
                t = wire.parse_topic(topic_name)
                if t.tier == "cloud" and t.kind == "answer":
                    self._cloud_answer(payload)
                    self.ack(token)
                    continue
                if t.tier != "device" or t.ident >= self.devices:
                    raise MessageError("topic", f"not a device of this model: {topic_name}")
                if t.kind == "status":
                    self._status(t.ident, payload, now)
                    self.ack(token)
                elif t.kind in ("scores", "features"):
                    self._message(t, payload, token, now)
                else:
                    raise MessageError("unexpected", f"gateway does not take {topic_name}")
            except MessageError as exc:
                self._reject(token, exc.reason)

    def _status(self, d: int, payload: bytes, now: float) -> None:
        if payload == wire.OFFLINE:
            self.offline_since.setdefault(d, now)
        elif payload == wire.ONLINE:
            self.offline_since.pop(d, None)
        else:
            raise MessageError("value", "status is online or offline")
        for s in list(self.pending.values()):
            self._maybe_advance(s, now)

    def _message(self, t: wire.Topic, payload: bytes, token: Any, now: float) -> None:
        msg = decode_message(payload, self.layout)
        kind = SCORES if t.kind == "scores" else FEATURES
        if msg.kind != kind:
            raise MessageError("type", f"a {t.kind} topic carries another message type")
        if msg.sender != t.ident:
            raise MessageError("topic", f"device {t.ident}'s topic carries a message of sender {msg.sender}")
        u = self.unwrap.peek(msg.seq)
        d = msg.sender
        if u in self.done:
            seen = self.done[u][0 if kind == SCORES else 1]
            raise MessageError("duplicate" if seen >> d & 1 else "late", f"sample {msg.seq} is already decided")
        s = self.pending.get(u)
        if s is None:
            if kind == FEATURES:
                raise MessageError("unexpected", f"features of sample {msg.seq}, which was not requested")
            if self.stopping:  # leave it unacknowledged: the next session of this gateway gets it again
                self.outcomes["deferred"] += 1
                return
            u = self.unwrap.unwrap(msg.seq)
            s = self.pending[u] = _Sample(u, now)
        if kind == SCORES:
            if d in s.q:
                raise MessageError("duplicate", f"scores of device {d}, sample {msg.seq}, twice")
            if s.phase != "scores":
                raise MessageError("late", f"scores of sample {msg.seq} after its local decision")
            s.q[d] = msg.values
        else:
            if d in s.feats:
                raise MessageError("duplicate", f"features of device {d}, sample {msg.seq}, twice")
            if s.phase != "features" or not s.mask >> d & 1:
                raise MessageError("unexpected", f"features of device {d}, sample {msg.seq}, were not requested")
            s.feats[d] = payload
        s.tokens.append(token)
        self._maybe_advance(s, now)

    def _maybe_advance(self, s: _Sample, now: float) -> None:
        if s.phase == "scores":
            if self.expected(now) <= set(s.q) or now - s.t0 >= self.deadline:
                if not self.expected(now) <= set(s.q):
                    self.outcomes["deadline"] += 1
                self._decide(s, now)
        elif s.phase == "features":
            want = set(wire.devices_of(s.mask, self.devices)) - self.down(now)
            if want <= set(s.feats) or now - s.t_req >= self.deadline:
                if not want <= set(s.feats):
                    self.outcomes["deadline"] += 1
                self._job(s, now)
        elif s.phase == "cloud" and now - s.t_job >= self.retry:
            # no cloud answered: the job was lost (mosquitto keeps no shared subscription over a restart)
            self._publish(wire.topic(self.system, "gateway", self.ident, "job"), s.job)
            s.t_job = now
            self.outcomes["job_retries"] += 1

    def _decide(self, s: _Sample, now: float) -> None:
        q = np.zeros((self.devices, self.classes), np.int32)
        present = np.zeros(self.devices, bool)
        for d, row in s.q.items():
            q[d], present[d] = row, True
        pred, exits = self.decision.decide(q, present)
        s.mask = wire.mask_of(s.q)
        if exits:
            self._publish(
                wire.topic(self.system, "gateway", self.ident, "answer"),
                wire.encode_answer(s.u, pred, self.local_index, s.mask),
            )
            self.outcomes["local"] += 1
            self._finish(s)
            return
        s.phase, s.t_req = "features", now
        self._publish(wire.topic(self.system, "gateway", self.ident, "request"), wire.encode_request(s.u, s.mask))
        self._maybe_advance(s, now)

    def _job(self, s: _Sample, now: float) -> None:
        s.job = wire.encode_job(s.u, s.feats)
        s.phase, s.t_job = "cloud", now
        self._publish(wire.topic(self.system, "gateway", self.ident, "job"), s.job)
        self.outcomes["cloud"] += 1

    def _cloud_answer(self, payload: bytes) -> None:
        """A cloud answered one of our jobs: the first answer becomes the sample's final answer, published
        by this gateway (the sink's one sender), and the sample is finished.  A later answer to the same job
        (another cloud got a redelivered or re-published copy of it) changes nothing."""
        seq, pred, ex, mask = wire.decode_answer(payload, self.classes, len(self.model.spec.exit_names), self.devices)
        s = self.pending.get(self.unwrap.peek(seq))
        if s is None or s.phase != "cloud":
            self.outcomes["cloud_answers_dropped"] += 1
            return
        self._publish(wire.topic(self.system, "gateway", self.ident, "answer"), wire.encode_answer(s.u, pred, ex, mask))
        self._finish(s)

    def _finish(self, s: _Sample) -> None:
        del self.pending[s.u]
        self.done[s.u] = (wire.mask_of(s.q), wire.mask_of(s.feats))
        for token in s.tokens:
            self.ack(token)
        if len(self.done) > 2 * wire.HALF:
            for u in [u for u in self.done if self.unwrap.stale(u)]:
                del self.done[u]

    def tick(self, now: float) -> None:
        for s in list(self.pending.values()):
            self._maybe_advance(s, now)

    def _due(self, s: _Sample) -> float:
        if s.phase == "scores":
            return s.t0 + self.deadline
        if s.phase == "features":
            return s.t_req + self.deadline
        return s.t_job + self.retry

    def next_wakeup(self, now: float) -> float | None:
        if not self.pending:
            return None
        ends = [self._due(s) for s in self.pending.values()]
        ends += [t + self.deadline for t in self.offline_since.values() if t + self.deadline > now]
        return max(0.0, min(ends) - now)


class CloudTier(Tier):
    """A cloud: JOB -> classify -> ANSWER.  Several share the work through a shared subscription."""

    name = "cloud"

    def __init__(self, model: DDNN, system: str, send: Send, ack: Ack, ident: int = 0, max_ahead: int = 4096) -> None:
        super().__init__(system, ident, send, ack)
        check_model(model)
        self.model = model
        self.layout = message_layout(model)
        self.devices = model.num_devices
        self.fshape = tuple(model.spec.feature_shape)
        self.unwrap: dict[int, wire.SeqUnwrap] = {}
        self.seen: dict[tuple[int, int], bytes] = {}  # (gateway, sample) -> our answer
        self.max_ahead = max_ahead
        self.cloud_index = model.spec.exit_names.index("cloud")
        self.classified = 0

    def subscriptions(self) -> list[str]:
        return [wire.shared(wire.cloud_group(self.system), wire.topic(self.system, "gateway", "+", "job"))]

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "classified": self.classified}

    def handle(self, batch: list[Delivery], now: float) -> None:
        jobs: list[tuple[int, int, dict[int, bytes], Any]] = []
        batch_keys: set[tuple[int, int]] = set()
        for topic_name, payload, token in batch:
            self.counters.received += 1
            try:
                t = wire.parse_topic(topic_name)
                if t.tier != "gateway" or t.kind != "job":
                    raise MessageError("unexpected", f"cloud does not take {topic_name}")
                seq, msgs = wire.decode_job(payload, self.layout, self.devices)
                unwrap = self.unwrap.setdefault(t.ident, wire.SeqUnwrap(self.max_ahead))
                u = unwrap.unwrap(seq)
                if (t.ident, u) in batch_keys:
                    raise MessageError("duplicate", f"job {seq} of gateway {t.ident} twice")
                if (t.ident, u) in self.seen:
                    self._publish(wire.topic(self.system, "cloud", self.ident, "answer"), self.seen[(t.ident, u)])
                    raise MessageError("duplicate", f"job {seq} of gateway {t.ident} twice (answered again)")
                if len(self.seen) > 2 * wire.HALF:
                    for key in [k for k in self.seen if self.unwrap[k[0]].stale(k[1])]:
                        del self.seen[key]
                batch_keys.add((t.ident, u))
                jobs.append((t.ident, u, msgs, token))
            except MessageError as exc:
                self._reject(token, exc.reason)
        if not jobs:
            return
        feats = np.zeros((len(jobs), self.devices, *self.fshape), np.float32)
        present = np.zeros((len(jobs), self.devices), bool)
        for i, (_, _, msgs, _) in enumerate(jobs):
            for d, m in msgs.items():
                feats[i, d] = unpack_features(np.frombuffer(m[3:], np.uint8), self.fshape)  # type: ignore[arg-type]
                present[i, d] = True
        pred = cloud_predict(self.model, feats, present)
        for i, (g, u, msgs, token) in enumerate(jobs):
            ans = wire.encode_answer(u, int(pred[i]), self.cloud_index, wire.mask_of(msgs))
            self.seen[(g, u)] = ans
            self._publish(wire.topic(self.system, "cloud", self.ident, "answer"), ans)
            self.classified += 1
            self.ack(token)


def make_tier(kind: str, model: DDNN, system: str, send: Send, ack: Ack, **options: Any) -> Tier:
    if kind == "device":
        return DeviceTier(model, options.pop("device"), system, send, ack, **options)
    if kind == "gateway":
        return GatewayTier(model, system, send, ack, **options)
    if kind == "cloud":
        return CloudTier(model, system, send, ack, **options)
    raise CodegenError(f"unknown tier {kind!r} (device, gateway or cloud)")


def answers_exit_names(model: DDNN) -> Iterable[str]:
    return model.spec.exit_names
