"""Merge the decoder graphs without and with past into one ``decoder_model_merged`` model.

The merged model is an ONNX ``If`` on the boolean input ``use_cache_branch``: its ``then`` branch is the graph
that reads the cache, its ``else`` branch the first-step graph. Both branches read the outer graph's inputs by
name and return ``logits`` and every ``present.*``: on cached steps the cross-attention presents are the past
ones passed through, which clients either reuse or ignore. Weights the two graphs share are stored once, in the
outer graph. This is the layout optimum writes and transformers.js and onnx-asr run.
"""

from __future__ import annotations

import hashlib

import onnx
from onnx import TensorProto, helper, numpy_helper

from .layout import OnnxLayout


def _tensor_key(tensor: TensorProto) -> tuple:
    # raw_data holds the exporters' weights; converting to numpy first would copy each of them once more
    data = tensor.raw_data or numpy_helper.to_array(tensor).tobytes()
    return tensor.data_type, tuple(tensor.dims), hashlib.sha1(data).hexdigest()


def _as_branch(graph: onnx.GraphProto, name: str, prefix: str, outer_inputs: set[str],
               shared: dict[tuple, str], initializers: list[TensorProto]) -> onnx.GraphProto:
    """``graph`` as an ``If`` branch: no inputs, its weights moved to ``initializers`` (deduplicated through
    ``shared``), every name it defines prefixed so that the two branches never define the same name."""
    rename: dict[str, str] = {}
    for tensor in graph.initializer:
        key = _tensor_key(tensor)
        if key not in shared:
            shared[key] = prefix + tensor.name
            moved = TensorProto()
            moved.CopyFrom(tensor)
            moved.name = shared[key]
            initializers.append(moved)
        rename[tensor.name] = shared[key]
    for node in graph.node:
        for out in node.output:
            if out and out not in outer_inputs:
                rename[out] = prefix + out

    nodes = []
    for node in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = prefix + (node.name or node.op_type)
        copy.input[:] = [rename.get(i, i) for i in node.input]
        copy.output[:] = [rename.get(o, o) for o in node.output]
        nodes.append(copy)
    outputs = []
    for out in graph.output:
        produced = rename.get(out.name, out.name)
        if produced == out.name:  # a graph input returned as it is: a branch must produce its outputs
            produced = f"{prefix}{out.name}"
            nodes.append(helper.make_node("Identity", [out.name], [produced], name=f"{prefix}identity_{out.name}"))
        # types only: the two branches' shapes differ (cached steps keep the past length symbolic)
        outputs.append(helper.make_tensor_value_info(produced, out.type.tensor_type.elem_type, None))
    value_info = []
    for info in graph.value_info:
        if info.name in rename:
            copy = onnx.ValueInfoProto()
            copy.CopyFrom(info)
            copy.name = rename[info.name]
            value_info.append(copy)
    return helper.make_graph(nodes, name, [], outputs, value_info=value_info)


def merge_decoders(no_past: onnx.ModelProto, with_past: onnx.ModelProto, layout: OnnxLayout) -> onnx.ModelProto:
    """One model with ``layout.decoder_inputs()`` in and ``layout.decoder_outputs()`` out (see the module doc)."""
    expected = layout.decoder_outputs()
    for model, what in ((no_past, "without past"), (with_past, "with past")):
        names = [o.name for o in model.graph.output]
        if names != expected:
            raise ValueError(f"The decoder graph {what} returns {names[:3]}..., expected {expected[:3]}...")
        if model.functions:
            raise ValueError(f"The decoder graph {what} holds local functions; export it with optimize=True.")
    axes = layout.decoder_axes()
    declared = {i.name: i for m in (no_past, with_past) for i in m.graph.input}
    outer_inputs = set(layout.decoder_inputs())

    def typed(name: str, elem_type: int, shape: list) -> onnx.ValueInfoProto:
        dims = [axes.get(name, {}).get(k, d) for k, d in enumerate(shape)]
        return helper.make_tensor_value_info(name, elem_type, dims)

    inputs = []
    for name in layout.decoder_inputs():
        if name == "use_cache_branch":
            inputs.append(helper.make_tensor_value_info(name, TensorProto.BOOL, [1]))
            continue
        tensor_type = declared[name].type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        inputs.append(typed(name, tensor_type.elem_type, shape))

    shared: dict[tuple, str] = {}
    initializers: list[TensorProto] = []
    else_branch = _as_branch(no_past.graph, "decoder_without_past", "first/", outer_inputs, shared, initializers)
    then_branch = _as_branch(with_past.graph, "decoder_with_past", "cached/", outer_inputs, shared, initializers)

    reference = {o.name: o for o in no_past.graph.output}
    outputs = []
    for name in expected:
        tensor_type = reference[name].type.tensor_type
        rank = len(tensor_type.shape.dim)
        static = {1: layout.num_heads, 3: layout.head_dim} if name != "logits" else {}
        shape = [static.get(k) for k in range(rank)]
        if name == "logits":
            shape[2] = tensor_type.shape.dim[2].dim_value or None
        outputs.append(typed(name, tensor_type.elem_type, shape))
    node = helper.make_node("If", ["use_cache_branch"], expected, name="optimum::if",
                            then_branch=then_branch, else_branch=else_branch)
    graph = helper.make_graph([node], "decoder_model_merged", inputs, outputs, initializer=initializers)
    opsets = {o.domain: o.version for o in [*no_past.opset_import, *with_past.opset_import]}
    merged = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                               producer_name="liteasr-hf", ir_version=no_past.ir_version)
    return merged
