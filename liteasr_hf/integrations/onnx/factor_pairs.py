"""The factorized layers of an exported graph, and how to even out their rank-space activations before 8-bit
quantization with no change in float.

A factor pair computes ``h = x @ weight1`` (``(..., rank)``), then ``h @ weight2``. LiteASR's ``weight2`` holds
principal directions of the layer's outputs, so column ``j`` of ``h`` carries the ``j``-th component, whose size
falls quickly with ``j``. ONNX Runtime quantizes an activation with one scale per tensor: the first component sets
the step and the last ones round to a few levels. Scaling column ``j`` of ``weight1`` by ``1 / s_j`` and row ``j`` of
``weight2`` by ``s_j`` leaves the product unchanged and moves part of that spread into ``weight2``, as SmoothQuant
does for dense layers: with ``s_j = sqrt(max|h_j| / max|weight2[j]|)`` both end up with the range
``sqrt(max|h_j| max|weight2[j]|)`` on every channel. ``max|h_j|`` comes from calibration audio.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .activations import activation_statistics


def factor_pairs(model: onnx.ModelProto) -> list[tuple[str, str, int]]:
    """``(first, second, rank)`` for every factorized layer of ``model``'s main graph: a ``MatMul`` by a constant
    ``(in, rank)`` weight whose only reader is a ``MatMul`` by a constant ``(rank, out)`` weight."""
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    pairs = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or len(weights.get(node.input[1], ())) != 2:
            continue
        after = readers.get(node.output[0], [])
        if (len(after) == 1 and after[0].op_type == "MatMul" and after[0].input[0] == node.output[0]
                and len(weights.get(after[0].input[1], ())) == 2):
            pairs.append((node.name, after[0].name, weights[node.input[1]][1]))
    return pairs


def rank_space_maxima(model: onnx.ModelProto, features: np.ndarray, threads: int | None = None) -> dict[str, np.ndarray]:
    """``max |h|`` per column ``(rank,)`` of every factor pair's first product (by that node's name) over the
    log-mel windows ``features`` ``(n, mels, 3000)``."""
    nodes = {n.name: n for n in model.graph.node}
    outputs = {first: nodes[first].output[0] for first, _, _ in factor_pairs(model)}
    stats = activation_statistics(model, list(outputs.values()), features, threads)
    return {first: stats[name].peaks for first, name in outputs.items()}


def equalize_factor_pairs(model: onnx.ModelProto, maxima: dict[str, np.ndarray], alpha: float = 0.5) -> int:
    """Rescale, in place, every factor pair of ``model`` whose first product has ``maxima``:
    ``s = max|h| ** alpha / max|weight2 row| ** (1 - alpha)``; the number of pairs rescaled. A weight read by any
    other node is left alone."""
    initializers = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    nodes = {n.name: n for n in model.graph.node}
    done = 0
    for first, second, _ in factor_pairs(model):
        w1_name, w2_name = nodes[first].input[1], nodes[second].input[1]
        if first not in maxima or uses[w1_name] != 1 or uses[w2_name] != 1:
            continue
        weight1 = numpy_helper.to_array(initializers[w1_name]).astype(np.float32)  # (in, rank)
        weight2 = numpy_helper.to_array(initializers[w2_name]).astype(np.float32)  # (rank, out)
        rows = np.abs(weight2).max(axis=1)
        scale = np.maximum(maxima[first], 1e-8) ** alpha / np.maximum(rows, 1e-8) ** (1 - alpha)
        scale = np.where((maxima[first] > 0) & (rows > 0), scale, 1.0).astype(np.float32)
        initializers[w1_name].CopyFrom(numpy_helper.from_array(weight1 / scale[None, :], w1_name))
        initializers[w2_name].CopyFrom(numpy_helper.from_array(weight2 * scale[:, None], w2_name))
        done += 1
    return done
