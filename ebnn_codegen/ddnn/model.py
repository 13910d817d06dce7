"""The DDNN as one trainable torch module.

Tiers, in the order a sample goes through them::

    device d (a DeviceSection): view d -> hidden blocks -> device exit scores (K)
                                 \\-> feature map of block `feature_block` (±1)
    local aggregator: the devices' exit scores -> local exit scores (MP, AP or CC)
    edge (optional): each group's feature maps -> edge section -> edge exit; the
                     edge exit combines the edges' scores (MP or AP)
    cloud: the devices' (or edges') feature maps -> aggregated (CC along
           channels, MP or AP element-wise) -> binary blocks -> cloud exit

Every aggregator takes a ``present`` mask (N × devices, bool): a missing
device (failed, or dropped out in training) is left out of MP and AP and
contributes zeros to CC.  A zero in a ±1 feature map contributes nothing to
the next binary block's dot product, exactly like zero padding.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..nn.blocks import QuantLinear, make_block
from ..nn.model import DeviceSection
from .calibration import Calibration
from .config import DdnnSpec, SectionSpec, parse_ddnn_config


def pool_masked(x: torch.Tensor, present: torch.Tensor, kind: str, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Combine ``x`` (N, S, ...) over axis 1 where ``present`` (N, S) is true.

    ``max`` and ``avg`` ignore missing entries (all missing -> 0); ``concat``
    zeroes them and flattens axis 1 into axis 2 (channels for maps); ``grid``
    zeroes them and lays maps (N, S, C, H, W) out as (N, C, rows*H, cols*W),
    source ``s`` in cell (s // cols, s % cols).
    """
    m = present.to(x.dtype).view(*present.shape, *([1] * (x.dim() - 2)))
    if kind == "grid":
        assert grid is not None
        rows, cols = grid
        y = x * m
        n, _, c, h, w = y.shape
        return y.view(n, rows, cols, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(n, c, rows * h, cols * w)
    if kind == "concat":
        y = x * m
        return y.reshape(y.shape[0], -1, *y.shape[3:])
    if kind == "avg":
        count = m.sum(dim=1).clamp(min=1.0)
        return (x * m).sum(dim=1) / count
    if kind == "max":
        neg = torch.finfo(x.dtype).min
        y = torch.where(m > 0, x, torch.full_like(x, neg)).max(dim=1).values
        anyp = present.any(dim=1).view(-1, *([1] * (y.dim() - 1)))
        return torch.where(anyp, y, torch.zeros_like(y))
    raise ValueError(f"unknown aggregator {kind!r}")


class LocalAggregator(nn.Module):
    """Device exit scores (N, D, K) -> local exit scores (N, K).

    ``concat`` (CC) feeds the concatenated scores to a binary linear layer
    (±1 weights, real inputs, no bias) and a batch norm; ``max``/``avg`` have
    no parameters.
    """

    def __init__(self, kind: str, devices: int, classes: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "concat":
            self.linear = QuantLinear(devices * classes, classes, bias=False)
            self.bn = nn.BatchNorm1d(classes)

    def forward(self, scores: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        y = pool_masked(scores, present, self.kind)
        if self.kind == "concat":
            y = self.bn(self.linear(y))
        return y


class Section(nn.Module):
    """An edge or cloud section: aggregate feature maps, binary blocks, exit."""

    def __init__(self, spec: SectionSpec) -> None:
        super().__init__()
        self.spec = spec
        self.aggregator = spec.aggregator
        self.blocks = nn.ModuleList(make_block(s) for s in spec.hidden)
        self.exit = make_block(spec.exit)

    def forward(self, feats: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (N, S, C, H, W) ±1 -> (exit scores (N, K), last hidden output)."""
        x = pool_masked(feats, present, self.aggregator, self.spec.grid)
        for block in self.blocks:
            x = block(x)
        return self.exit(x), x


class DDNN(nn.Module):
    """A distributed DNN built from a DDNN config (see :mod:`ebnn_codegen.ddnn.config`).

    ``forward(x, present)`` takes views (N, D, C, H, W) as float pixels 0..255
    and returns a dict: ``device`` (N, D, K), ``local`` (N, K), ``edge`` (N, K)
    when there is an edge tier, and ``cloud`` (N, K).

    ``calibration`` (:class:`~ebnn_codegen.ddnn.calibration.Calibration`) holds the
    message scale and the exit thresholds; ``meta`` what the checkpoint records
    about the model (``meta.training``).  :attr:`config` is the checkpoint's
    config, built from the spec, the calibration and the meta: a fresh copy, so
    change ``calibration`` or ``meta``, not that dict.
    """

    checkpoint_kind = "ddnn"

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.spec: DdnnSpec = parse_ddnn_config(config)
        self.calibration = Calibration.from_config(self.spec.config)
        self.meta: dict = dict(self.spec.config.get("meta") or {})
        s = self.spec
        count = 1 if s.share_weights else s.num_devices
        self.device_sections = nn.ModuleList(DeviceSection(s.device_config(d)) for d in range(count))
        self.local = LocalAggregator(s.local_aggregator, s.num_devices, s.num_classes)
        self.edges = nn.ModuleList(Section(s.edge) for _ in s.edge_groups) if s.edge and s.edge_groups else None
        self.cloud = Section(s.cloud)

    @property
    def config(self) -> dict:
        """The config a checkpoint stores: the spec's, with the calibration and the meta written in."""
        out = self.calibration.written_into(self.spec.config)
        if self.meta:
            out["meta"] = copy.deepcopy(self.meta)
        else:
            out.pop("meta", None)
        return out

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_devices(self) -> int:
        return self.spec.num_devices

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def device(self, d: int) -> DeviceSection:
        """The section that runs on device ``d``."""
        if not 0 <= d < self.spec.num_devices:
            raise IndexError(f"no device {d}")
        section = self.device_sections[0 if self.spec.share_weights else d]
        assert isinstance(section, DeviceSection)
        return section

    def run_device(self, d: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Device ``d`` on its views (N, C, H, W): (exit scores (N, K), feature map (N, C', H', W'))."""
        sec = self.device(d)
        outs = sec.features(x)
        return sec.exit(outs[-1]), outs[self.spec.feature_block]

    def upper_tiers(self, scores: torch.Tensor, feats: torch.Tensor, present: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything above the devices, from their scores (N, D, K) and feature maps (N, D, C, H, W)."""
        out = {"device": scores, "local": self.local(scores, present)}
        if self.edges is not None:
            assert self.spec.edge_groups is not None
            e_scores, e_feats, e_present = self.edge_tier(feats, present)
            out["edge"] = pool_masked(e_scores, e_present, self.spec.edge_exit_aggregator)
            out["cloud"] = self.cloud(e_feats, e_present)[0]
        else:
            out["cloud"] = self.cloud(feats, present)[0]
        return out

    def edge_tier(self, feats: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per edge: exit scores (N, E, K), output maps (N, E, C, H, W), presence (N, E)."""
        assert self.edges is not None and self.spec.edge_groups is not None
        scores, maps, pres = [], [], []
        for edge, group in zip(self.edges, self.spec.edge_groups, strict=True):
            idx = list(group)
            s, m = edge(feats[:, idx], present[:, idx])
            p = present[:, idx].any(dim=1)
            pm = p.to(m.dtype).view(-1, *([1] * (m.dim() - 1)))
            scores.append(s)
            maps.append(m * pm)  # an edge with no device left sends nothing
            pres.append(p)
        return torch.stack(scores, 1), torch.stack(maps, 1), torch.stack(pres, 1)

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        n, d = x.shape[:2]
        if d != self.spec.num_devices:
            raise ValueError(f"expected {self.spec.num_devices} views per sample, got {d}")
        if tuple(x.shape[2:]) != tuple(self.spec.device.input_shape):
            raise ValueError(f"expected views shaped {self.spec.device.input_shape}, got {tuple(x.shape[2:])}")
        if present is None:
            present = torch.ones(n, d, dtype=torch.bool, device=x.device)
        scores, feats = [], []
        for i in range(d):
            s, f = self.run_device(i, x[:, i])
            scores.append(s)
            feats.append(f)
        return self.upper_tiers(torch.stack(scores, 1), torch.stack(feats, 1), present)
