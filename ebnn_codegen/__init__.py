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

__version__ = "0.1.0"

from .api import build, compile, export, load, report, run, save, verify  # noqa: E402
from .errors import CodegenError  # noqa: E402

__all__ = ["__version__", "build", "compile", "export", "load", "report", "run", "save", "verify", "CodegenError"]
