"""ebnn-codegen: binarized neural networks from PyTorch to bit-exact microcontroller C.

Public API::

    model = ebnn_codegen.build(config)          # a torch.nn.Module (device section)
    ebnn_codegen.save(model, "model.pt")        # config + state_dict only
    model = ebnn_codegen.load("model.pt")       # torch.load(weights_only=True)
    graph = ebnn_codegen.compile(model)         # the IR after every pass
    files = ebnn_codegen.export(model, "out/")  # C files
    result = ebnn_codegen.run(model, x)         # host C (or another target) on uint8 inputs
    report = ebnn_codegen.verify(model, x)      # bit-exact comparison with torch
"""

from __future__ import annotations

from .version import __version__  # first: modules below take it while the package loads

# isort: split
from .api import build, compile, export, load, report, run, save, verify
from .errors import CodegenError

__all__ = ["__version__", "build", "compile", "export", "load", "report", "run", "save", "verify", "CodegenError"]
