"""Distributed deep neural networks (DDNN) over end devices, an optional edge and the cloud.

Modules:

* :mod:`.config` -- the DDNN config and its validation;
* :mod:`.model` -- the trainable :class:`~.model.DDNN` (device sections, aggregators, edge, cloud);
* :mod:`.train` -- joint training with device dropout, message calibration, threshold choice;
* :mod:`.calibration` -- the calibrated message scale and exit thresholds (``model.calibration``);
* :mod:`.pipeline` -- :func:`train_from_config`: config -> trained, calibrated, recorded model
  (what ``ebnn-gen ddnn train`` runs);
* :mod:`.messages` -- the bytes that cross the network, with a strict, pure decoder;
* :mod:`.exits` -- the normalised-entropy exit rule and the local aggregator on message integers;
* :mod:`.runtime` -- the staged runtime (devices as generated C or PyTorch);
* :mod:`.metrics` -- evaluation reports: accuracies, exits, bytes, failures, scaling, sweeps;
* :mod:`.plots` -- the PNG figures;
* :mod:`.export` -- the C of every device section, device message encoders and the gateway.

Quick start::

    from ebnn_codegen.ddnn import DDNN, datasets, metrics
    model = ebnn_codegen.load("examples/models/ddnn_mnist_tiles.pt")
    report = metrics.evaluate(model, datasets.load("mnist-tiles", "test"), devices="c")
"""

from __future__ import annotations

from ..checkpoint import register_kind
from .calibration import Calibration
from .config import parse_ddnn_config
from .model import DDNN
from .pipeline import Overrides, TrainResult, train_from_config

register_kind("ddnn", DDNN)  # ebnn_codegen.load() builds DDNN checkpoints once this package is imported

__all__ = ["DDNN", "Calibration", "Overrides", "TrainResult", "parse_ddnn_config", "train_from_config"]
