"""The staged runtime: devices -> local aggregator -> (edge) -> cloud, through messages.

1. **Devices** (:meth:`StagedRuntime.device_stage`): every device runs its
   section on its view (:func:`ebnn_codegen.ddnn.net.tiers.device_outputs`,
   the function the networked device tier runs too), as the generated C through the host build
   (``devices="c"``; the scores are the C's int32 fixed point, shifted to the
   message integers by :func:`~ebnn_codegen.ddnn.messages.quantize_fixed`) or
   in PyTorch (``devices="torch"``; float scores rounded by
   :func:`~ebnn_codegen.ddnn.messages.quantize_float`).  The feature maps are
   the ±1 outputs of the device's ``feature_block`` (bit-exact between the two).
2. **Local aggregator** (:meth:`StagedRuntime.run`): each working device sends
   a SCORES message per sample; the gateway decodes it
   (:func:`~ebnn_codegen.ddnn.messages.decode_message`), counts and drops
   malformed ones, aggregates the integers (:class:`~ebnn_codegen.ddnn.exits.LocalGateway`)
   and exits the sample if η < T.
3. Only for samples that did not exit, each working device sends a FEATURES
   message; the **edge** sections (if any) and then the **cloud** decode them,
   treat a missing or malformed one as a missing device, and run in PyTorch.
   An edge that exits a sample sends nothing further; otherwise it sends its
   own FEATURES message to the cloud.

The device stage does not depend on thresholds or failures, so one
:class:`DeviceStage` serves a whole sweep.  ``failed`` devices send nothing;
``channel`` (a function bytes -> bytes or None) lets tests corrupt or drop
messages in flight.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import CodegenError
from .datasets import MultiView
from .exits import LocalGateway, argmax_first, normalized_entropy
from .messages import (
    FEATURES,
    HEADER_BYTES,
    SCORES,
    MessageError,
    decode_message,
    encode_features_batch,
    encode_scores_batch,
    message_layout,
    unpack_features,
)
from .model import DDNN, pool_masked

Channel = Callable[[bytes], "bytes | None"]
DEVICE_MODES = ("c", "torch")


@dataclass
class DeviceStage:
    """What every device computed on a dataset (independent of thresholds and failures)."""

    devices: str
    pred: np.ndarray  # int64 (N, D): each device's own prediction (argmax of its exit)
    q: np.ndarray  # int32 (N, D, K): the integers of its SCORES messages
    feats: np.ndarray  # int8 ±1 (N, D, C, H, W): its feature map
    y: np.ndarray
    y_views: np.ndarray
    raw_bytes: int  # per sample, every view as uint8
    scores: np.ndarray | None = None  # the devices' own scores: int32 (C) or float32 (torch)
    seconds: float = 0.0  # time the device stage took

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Outcome:
    """The result of one staged run."""

    exit_names: tuple[str, ...]
    pred: np.ndarray  # (N,) the classifying exit's prediction
    exit_index: np.ndarray  # (N,) index into exit_names
    tier_pred: dict[str, np.ndarray]  # per exit, (N,) prediction where the sample reached it, else -1
    y: np.ndarray
    bytes_sent: dict[str, int]  # totals over the run
    message_errors: dict[str, int]
    raw_bytes: int
    failed: tuple[int, ...] = ()

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def overall_accuracy(self) -> float:
        return float(np.mean(self.pred == self.y)) if self.n else 0.0

    @property
    def exit_fraction(self) -> dict[str, float]:
        return {name: float(np.mean(self.exit_index == i)) if self.n else 0.0 for i, name in enumerate(self.exit_names)}

    @property
    def exited_accuracy(self) -> dict[str, float | None]:
        """Accuracy on the samples that exit at each exit (None where none does)."""
        out: dict[str, float | None] = {}
        for i, name in enumerate(self.exit_names):
            sel = self.exit_index == i
            out[name] = float(np.mean(self.pred[sel] == self.y[sel])) if sel.any() else None
        return out

    def reached_accuracy(self) -> dict[str, float | None]:
        """Accuracy of each exit on every sample that reached it."""
        out: dict[str, float | None] = {}
        for name, p in self.tier_pred.items():
            sel = p >= 0
            out[name] = float(np.mean(p[sel] == self.y[sel])) if sel.any() else None
        return out

    def bytes_per_sample(self) -> dict[str, float | None]:
        n = max(self.n, 1)
        per = {k: v / n for k, v in self.bytes_sent.items()}
        total = sum(per.values())
        out: dict[str, float | None] = {**per, "total": total}
        out["raw"] = float(self.raw_bytes)
        out["reduction"] = float(self.raw_bytes / total) if total > 0 else None  # None: nothing was sent
        return out


class StagedRuntime:
    """Runs a DDNN tier by tier, with devices as generated C (``"c"``) or PyTorch (``"torch"``)."""

    def __init__(self, model: DDNN, devices: str = "c", kernels: str = "fast", batch: int = 1024) -> None:
        if devices not in DEVICE_MODES:
            raise CodegenError(f"--devices must be c or torch, got {devices!r}")
        self.model = model.eval()
        self.devices = devices
        self.kernels = kernels
        self.batch = batch
        self.gateway = LocalGateway(model)
        self.layout = message_layout(model)
        self.exit_names = model.spec.exit_names
        self._graphs: dict[int, Any] = {}
        self._libs: dict[int, Any] = {}

    # ------------------------------------------------------------------ devices

    def graph(self, d: int):
        """The compiled IR of device ``d``'s section (one per distinct section)."""
        from ..api import compile as compile_section

        key = 0 if self.model.spec.share_weights else d
        if key not in self._graphs:
            self._graphs[key] = compile_section(self.model.device(d))
        return self._graphs[key]

    def host_lib(self, d: int):
        """The loaded host build of device ``d``'s section (built once per runtime)."""
        from ..targets import host

        key = 0 if self.model.spec.share_weights else d
        if key not in self._libs:
            self._libs[key] = host.build(self.graph(d), self.kernels)
        return self._libs[key]

    def device_stage(self, data: MultiView) -> DeviceStage:
        t0 = time.perf_counter()
        n, dn = len(data), self.model.num_devices
        if data.x.ndim != 5 or data.x.shape[1] != dn:
            raise CodegenError(f"the model has {dn} devices; the data has views shaped {data.x.shape[1:]}")
        want = tuple(self.model.spec.device.input_shape)
        if tuple(data.x.shape[2:]) != want:
            raise CodegenError(
                f"the devices take {'x'.join(map(str, want))} views; the data's are {'x'.join(map(str, data.x.shape[2:]))}"
            )
        from .net.tiers import device_outputs

        k = self.model.num_classes
        fshape = self.model.spec.feature_shape
        pred = np.zeros((n, dn), np.int64)
        q = np.zeros((n, dn, k), np.int32)
        feats = np.zeros((n, dn, *fshape), np.int8)
        scores = np.zeros((n, dn, k), np.int32 if self.devices == "c" else np.float32)
        for d in range(dn):
            graph = self.graph(d) if self.devices == "c" else None
            lib = self.host_lib(d) if self.devices == "c" else None
            out = device_outputs(self.model, d, data.x[:, d], self.devices, graph, self.kernels, self.batch, lib=lib)
            pred[:, d], scores[:, d], q[:, d], feats[:, d] = out
        return DeviceStage(
            self.devices,
            pred,
            q,
            feats,
            data.y,
            data.y_views,
            data.raw_bytes_per_sample,
            scores,
            time.perf_counter() - t0,
        )

    # ------------------------------------------------------------------ transport

    def _deliver(
        self,
        msgs: dict[int, np.ndarray],
        seq: np.ndarray,
        kind: int,
        base: int,
        senders: int,
        channel: Channel | None,
        errors: dict[str, int],
        mask: np.ndarray | None = None,
    ) -> tuple[dict[int, np.ndarray], np.ndarray, int]:
        """Send ``msgs[sender]`` (N, L) rows, one per sample; decode them at the receiver.

        Sender ``base + s`` sends for sample ``i`` only where ``mask[i, s]``
        (default: always).  Returns, per slot ``s``, the unpacked values of
        the messages that arrived valid (zeros elsewhere), the presence mask
        (N, senders) and the bytes that crossed the network.
        """
        n = len(seq)
        present = np.zeros((n, senders), bool)
        payloads: dict[int, list[bytes | None]] = {s: [None] * n for s in range(senders)}
        sent = 0
        for sender, rows in msgs.items():
            for i in range(n):
                if mask is not None and not mask[i, sender - base]:
                    continue
                wire = rows[i].tobytes()
                data = channel(wire) if channel is not None else wire
                if data is None:  # lost in transit
                    continue
                sent += len(data)
                try:
                    msg = decode_message(data, self.layout)
                except MessageError as exc:
                    errors[exc.reason] = errors.get(exc.reason, 0) + 1
                    continue
                slot = msg.sender - base
                if msg.kind != kind or not 0 <= slot < senders:
                    errors["unexpected"] = errors.get("unexpected", 0) + 1
                    continue
                if msg.seq != int(seq[i]) & 0xFFFF:
                    errors["sequence"] = errors.get("sequence", 0) + 1
                    continue
                if present[i, slot]:
                    errors["duplicate"] = errors.get("duplicate", 0) + 1
                    continue
                present[i, slot] = True
                payloads[slot][i] = msg.payload
        values = {s: self._unpack(kind, base + s, payloads[s], present[:, s]) for s in range(senders)}
        return values, present, sent

    def _unpack(self, kind: int, sender: int, payloads: list[bytes | None], present: np.ndarray) -> np.ndarray:
        """The validated payloads of one sender, unpacked together (zeros where missing)."""
        lay = self.layout
        size = (lay.scores_bytes() if kind == SCORES else lay.features_bytes(sender)) - HEADER_BYTES
        raw = np.zeros((len(payloads), size), np.uint8)
        idx = np.flatnonzero(present)
        if len(idx):
            joined = b"".join(payloads[i] or b"" for i in idx)
            raw[idx] = np.frombuffer(joined, np.uint8).reshape(len(idx), size)
        if kind == SCORES:
            dt = np.dtype("<i1") if lay.score_bits == 8 else np.dtype("<i2")
            out = raw.view(dt).astype(np.int32)
            out[~present] = 0
            return out.reshape(len(payloads), lay.num_classes)
        out = unpack_features(raw, lay.feature_shapes[sender]).astype(np.float32)
        out[~present] = 0
        return out

    # ------------------------------------------------------------------ the staged run

    def run(
        self,
        stage: DeviceStage,
        thresholds: dict[str, float] | None = None,
        failed: Iterable[int] = (),
        channel: Channel | None = None,
    ) -> Outcome:
        """One pass of every sample through the tiers, with the given exit thresholds."""
        spec = self.model.spec
        th = self.model.calibration.threshold_map()
        if thresholds:
            th.update(thresholds)
        failed_set = tuple(sorted(set(int(f) for f in failed)))
        for f in failed_set:
            if not 0 <= f < spec.num_devices:
                raise CodegenError(f"no device {f} to fail (devices 0..{spec.num_devices - 1})")
        n, dn = len(stage), spec.num_devices
        seq = np.arange(n, dtype=np.int64)
        errors: dict[str, int] = {}
        sent = {"to_aggregator": 0, "to_cloud": 0}
        live = [d for d in range(dn) if d not in failed_set]

        # 1. devices -> local aggregator: SCORES for every sample
        msgs = {d: encode_scores_batch(self.layout, d, seq, stage.q[:, d]) for d in live}
        vals, present, nbytes = self._deliver(msgs, seq, SCORES, 0, dn, channel, errors)
        sent["to_aggregator"] += nbytes
        q = np.stack([vals[d] for d in range(dn)], axis=1).astype(np.int64)
        z_local, p_local = self.gateway.scores(q, present)
        exit_local = (normalized_entropy(z_local) < th["local"]) & present.any(axis=1)

        names = self.exit_names
        pred = p_local.copy()
        exit_index = np.zeros(n, np.int64)
        tier_pred = {name: np.full(n, -1, np.int64) for name in names}
        tier_pred["local"] = p_local.copy()
        todo = np.flatnonzero(~exit_local)

        # 2. devices -> edge/cloud: FEATURES only for samples that did not exit
        fshape = spec.feature_shape
        feats = np.zeros((len(todo), dn, *fshape), np.float32)
        fpresent = np.zeros((len(todo), dn), bool)
        if len(todo):
            msgs = {d: encode_features_batch(self.layout, d, seq[todo], stage.feats[todo, d]) for d in live}
            vals, fpresent, nbytes = self._deliver(msgs, seq[todo], FEATURES, 0, dn, channel, errors)
            sent["to_cloud"] += nbytes
            feats = np.stack([vals[d] for d in range(dn)], axis=1)

        cloud_in, cloud_present = feats, fpresent
        if spec.edge is not None and spec.edge_groups is not None:
            sent["edge_to_cloud"] = 0
            e = len(spec.edge_groups)
            with torch.no_grad():
                e_scores, e_maps, e_present = self.model.edge_tier(torch.from_numpy(feats), torch.from_numpy(fpresent))
                z_edge = pool_masked(e_scores, e_present, spec.edge_exit_aggregator).numpy().astype(np.float64)
            e_present_np = e_present.numpy()
            p_edge = argmax_first(z_edge)
            exit_edge = (normalized_entropy(z_edge) < th["edge"]) & e_present_np.any(axis=1)
            tier_pred["edge"][todo] = p_edge
            eidx = names.index("edge")
            pred[todo[exit_edge]] = p_edge[exit_edge]
            exit_index[todo[exit_edge]] = eidx
            keep = ~exit_edge
            todo = todo[keep]
            maps = e_maps.numpy()[keep].astype(np.int8)
            emask = e_present_np[keep]
            eshape = spec.edge.out_shape
            cloud_in = np.zeros((len(todo), e, *eshape), np.float32)
            cloud_present = np.zeros((len(todo), e), bool)
            if len(todo):
                msgs = {
                    dn + g: encode_features_batch(self.layout, dn + g, seq[todo], np.where(maps[:, g] > 0, 1, -1))
                    for g in range(e)
                }
                vals, cloud_present, nbytes = self._deliver(
                    msgs, seq[todo], FEATURES, dn, e, channel, errors, mask=emask
                )
                sent["edge_to_cloud"] += nbytes
                cloud_in = np.stack([vals[g] for g in range(e)], axis=1)

        # 3. cloud
        if len(todo):
            from .net.tiers import cloud_predict

            p_cloud = cloud_predict(self.model, cloud_in, cloud_present)
            tier_pred["cloud"][todo] = p_cloud
            pred[todo] = p_cloud
            exit_index[todo] = names.index("cloud")
        return Outcome(names, pred, exit_index, tier_pred, stage.y, sent, errors, stage.raw_bytes, failed_set)
