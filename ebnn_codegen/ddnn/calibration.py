"""What training measures once the weights are fixed: the message scale and the exit thresholds.

A :class:`Calibration` is immutable.  :func:`~ebnn_codegen.ddnn.train.calibrate_messages`
and :func:`~ebnn_codegen.ddnn.train.choose_thresholds` give the model a new one
(``model.calibration = ...``); every tier, the runtime, the exporter and the networked
processes read it from there.  The checkpoint keeps it where the config schema has it
(``messages.score_frac_bits`` and ``thresholds``, docs/ddnn.md), so a calibrated model
saves and loads as before: :attr:`DDNN.config <ebnn_codegen.ddnn.model.DDNN.config>` is
the config with the calibration written in.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import CodegenError


@dataclass(frozen=True)
class Calibration:
    """``score_frac_bits``: the fixed-point position m of the SCORES messages (value =
    round(score * 2**m)); None until :func:`~ebnn_codegen.ddnn.train.calibrate_messages` ran.
    ``thresholds``: normalised-entropy exit threshold per exit name (``local``, ``edge``)."""

    score_frac_bits: int | None
    thresholds: tuple[tuple[str, float], ...]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Calibration:
        """From a validated DDNN config (:func:`~ebnn_codegen.ddnn.config.parse_ddnn_config`)."""
        m = config["messages"]["score_frac_bits"]
        th = tuple((str(k), float(v)) for k, v in config["thresholds"].items())
        return cls(None if m is None else int(m), th)

    @property
    def calibrated(self) -> bool:
        return self.score_frac_bits is not None

    def frac_bits(self) -> int:
        """The message scale m; a clear error for a model that was never calibrated."""
        if self.score_frac_bits is None:
            raise CodegenError(
                "the model's message format is not calibrated (messages.score_frac_bits is null)",
                hint="train it with `ebnn-gen ddnn train`, which calibrates the message scale",
            )
        return self.score_frac_bits

    def threshold(self, name: str) -> float:
        for key, value in self.thresholds:
            if key == name:
                return value
        raise KeyError(f"no threshold for exit {name!r}")

    def threshold_map(self) -> dict[str, float]:
        return dict(self.thresholds)

    def with_frac_bits(self, m: int) -> Calibration:
        return Calibration(int(m), self.thresholds)

    def with_thresholds(self, thresholds: Mapping[str, float]) -> Calibration:
        return Calibration(self.score_frac_bits, tuple((str(k), float(v)) for k, v in thresholds.items()))

    def written_into(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``config`` holding this calibration (what a checkpoint stores)."""
        out = copy.deepcopy(dict(config))
        out["messages"] = {**out["messages"], "score_frac_bits": self.score_frac_bits}
        out["thresholds"] = self.threshold_map()
        return out
