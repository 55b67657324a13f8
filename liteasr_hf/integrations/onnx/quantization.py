"""Smaller variants of an exported graph: ONNX Runtime's dynamic 8-bit quantization, 4-bit weight blocks, fp16.

Only the weights of matrix products are quantized (``MatMul``, ``Gemm``); convolutions stay in float, because
ONNX Runtime's ``ConvInteger`` takes unsigned weights only and the two input convolutions are a small part of
the encoder. In a LiteWhisper encoder every factor of a factorized layer is its own ``MatMul`` and is quantized
like a dense weight. The names follow transformers.js's ``dtype`` option: ``q8`` (its default 8-bit name, written
as ``*_quantized.onnx``) and ``int8`` are signed 8-bit weights, ``uint8`` unsigned, ``q4`` 4-bit blocks of 32.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import onnx

from .layout import QUANTIZATIONS

Q4_BLOCK_SIZE = 32


def check_quantizations(names) -> tuple[str, ...]:
    """The requested variants, validated: unknown names raise with the list of known ones."""
    names = tuple(dict.fromkeys(names or ()))
    unknown = [n for n in names if n not in QUANTIZATIONS]
    if unknown:
        raise ValueError(f"Unknown quantization {', '.join(map(repr, unknown))}: "
                         f"choose from {', '.join(QUANTIZATIONS)}.")
    return names


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    # onnxruntime.quantization advises shape pre-processing through the root logger on every call.
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_file(source: Path, target: Path, kind: str, external_data: bool = False) -> None:
    """Write the ``kind`` variant of the ONNX file ``source`` to ``target``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if kind in ("q8", "int8", "uint8"):
        with _quiet_root_logger():
            quantize_dynamic(
                source, target, op_types_to_quantize=["MatMul", "Gemm"], per_channel=False, reduce_range=False,
                weight_type=QuantType.QUInt8 if kind == "uint8" else QuantType.QInt8,
                use_external_data_format=external_data,
            )
    elif kind == "q4":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(onnx.load(source), bits=4, block_size=Q4_BLOCK_SIZE, is_symmetric=True,
                                         op_types_to_quantize=("MatMul",))
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=external_data)
    else:
        raise ValueError(f"Unknown quantization {kind!r}: choose from {', '.join(QUANTIZATIONS)}.")


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Weights and computation in float16; inputs and outputs stay float32, so clients feed the same tensors."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return _topologically_sorted(convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True))


def _topologically_sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """The converter appends the casts of the kept float32 inputs after the nodes that read them; ONNX wants every
    node after the nodes that produce its inputs."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    nodes, placed, ordered = list(graph.node), set(), []
    while len(ordered) < len(nodes):
        before = len(ordered)
        for index, node in enumerate(nodes):  # nearly sorted already: few passes
            if index not in placed and all(name in ready for name in node.input):
                placed.add(index)
                ordered.append(node)
                ready.update(node.output)
        if len(ordered) == before:
            raise ValueError("The fp16 graph reads a value that no node produces.")
    del graph.node[:]
    graph.node.extend(ordered)
    return model
