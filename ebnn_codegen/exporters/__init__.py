"""Exporters: ebnn-codegen models to other formats (QONNX for FINN / hls4ml); need the ``import`` extra."""
