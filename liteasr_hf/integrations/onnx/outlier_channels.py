"""Split a product's few outlier input channels off into float, so that the rest can run in 8 bits.

In the last three layers of whisper-base's encoder, ``fc2`` reads a GELU output in which a few of its 2048 channels
peak over 100 times the tensor's root mean square. ONNX Runtime quantizes an activation with one scale per tensor, so
those channels set the step and the others round to a few levels: the q8 scheme used to leave such products whole in
float, each as slow as in fp32. Here ``x @ W`` becomes ``(x * keep) @ W_kept + x[:, idx] @ W[idx]``: ``keep`` zeroes
the outlier channels ``idx`` (and ``W_kept`` their rows), whose small product stays in float beside the 8-bit product
of everything else (7 to 81 channels per product in whisper-base and the base presets). In float the two are the same
function (tests/test_onnx_quantization.py).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .activations import TensorStatistics

#: What the float side product of a split is named after its product (the quantizer must leave it alone).
FLOAT_SUFFIX = "_outlier_channels"


def outlier_channels(stats: TensorStatistics, peak_to_rms: float, max_fraction: float = 0.05) -> np.ndarray | None:
    """The fewest channels, largest peak first, without which the rest of the tensor peaks at most ``peak_to_rms``
    times its own root mean square (sorted indices; empty where it already does); None where that takes more than
    ``max_fraction`` of the channels (and more than one). The outliers carry much of the tensor's energy, so the
    rest's RMS is smaller than the whole's: each candidate set is judged against the RMS of what remains."""
    if stats.channel_squares is None:
        raise ValueError("These statistics have no sum of squares per channel: gather them with activation_statistics.")
    channels = stats.peaks.size
    order = np.argsort(-stats.peaks, kind="stable")
    squares_left = stats.channel_squares.sum() - np.concatenate([[0.0], np.cumsum(stats.channel_squares[order])])
    values_per_channel = stats.count / channels
    for removed in range(max(1, int(max_fraction * channels)) + 1):
        rest = channels - removed
        rms = np.sqrt(max(squares_left[removed], 0.0) / (values_per_channel * rest))
        if removed == channels or stats.peaks[order[removed]] <= peak_to_rms * rms:
            return np.sort(order[:removed])
    return None


def split_outlier_channels(model: onnx.ModelProto, channels: dict[str, np.ndarray]) -> list[str]:
    """Rewrite, in place, each product ``x @ W`` named in ``channels`` (a ``MatMul`` by a constant ``(in, out)``
    weight, ``model`` with its weights loaded) as the product of ``x`` with those input channels zeroed, plus the
    float product of those channels alone; returns the names of the float side products. The product keeps its
    name and the new nodes copy its module scopes, so that profiles and the first-layer rule still find it."""
    initializers = {t.name: t for t in model.graph.initializer}
    nodes = list(model.graph.node)
    done: list[str] = []
    rewritten: list[onnx.NodeProto] = []
    for node in nodes:
        idx = channels.get(node.name)
        if idx is None or len(idx) == 0:
            rewritten.append(node)
            continue
        if node.op_type != "MatMul" or node.input[1] not in initializers:
            raise ValueError(f"Node {node.name!r} is not a product by a constant weight: its outlier channels "
                             "cannot be split off.")
        weight = numpy_helper.to_array(initializers[node.input[1]])
        if weight.ndim != 2 or idx.max() >= weight.shape[0]:
            raise ValueError(f"Node {node.name!r}: outlier channels {idx.tolist()} do not fit its weight "
                             f"{list(weight.shape)}.")
        name, x, y = node.name, node.input[0], node.output[0]
        keep = np.ones(weight.shape[0], weight.dtype)
        keep[idx] = 0
        kept = weight * keep[:, None]
        model.graph.initializer.extend([
            numpy_helper.from_array(keep, f"{name}_keep"),
            numpy_helper.from_array(kept, f"{name}_weight_kept"),
            numpy_helper.from_array(idx.astype(np.int64), f"{name}_outlier_index"),
            numpy_helper.from_array(np.ascontiguousarray(weight[idx]), f"{name}_outlier_rows"),
        ])
        new = [
            helper.make_node("Mul", [x, f"{name}_keep"], [f"{name}_kept_input"], name=f"{name}_keep"),
            helper.make_node("Gather", [x, f"{name}_outlier_index"], [f"{name}_outlier_input"], axis=-1,
                             name=f"{name}_outlier_gather"),
            helper.make_node("MatMul", [f"{name}_outlier_input", f"{name}_outlier_rows"], [f"{name}_outlier_output"],
                             name=f"{name}{FLOAT_SUFFIX}"),
        ]
        node.input[0], node.input[1] = f"{name}_kept_input", f"{name}_weight_kept"
        node.output[0] = f"{name}_kept_output"
        total = helper.make_node("Add", [f"{name}_kept_output", f"{name}_outlier_output"], [y],
                                 name=f"{name}_outlier_sum")
        for added in (*new, total):
            added.metadata_props.extend(node.metadata_props)
        rewritten += [*new[:2], node, new[2], total]
        done.append(f"{name}{FLOAT_SUFFIX}")
    if done:
        del model.graph.node[:]
        model.graph.node.extend(rewritten)
        used = {i for n in model.graph.node for i in n.input}
        unused = [t for t in model.graph.initializer if t.name not in used]
        for tensor in unused:  # the original weights, now read by no node
            model.graph.initializer.remove(tensor)
    return done
