"""ONNX export for ONNX Runtime, transformers.js and onnx-asr: the graphs, the merged decoder, quantized variants,
the client files, and a small ONNX Runtime transcriber to check them against PyTorch."""

from .export import export_onnx
from .layout import DTYPE_SUFFIXES, OnnxLayout
from .runtime import OnnxWhisper  # noqa: E402

__all__ = ["DTYPE_SUFFIXES", "OnnxLayout", "OnnxWhisper", "export_onnx"]
