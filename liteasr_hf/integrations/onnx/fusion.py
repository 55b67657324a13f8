"""Fuse what ``torch.onnx.export`` writes for Whisper's encoder into ONNX Runtime's fused operators.

The exporter writes eager self-attention as a dozen nodes per layer: query, key and value each reshaped to heads and
transposed, the scores' ``MatMul``, ``Softmax``, the weighted sum's ``MatMul``, a transpose back and a reshape. Over
Whisper's 1500 frames those products of two activations are most of a q8 encoder's time (8-bit weights do not touch
them). It writes the exact GELU as five element-wise nodes (``x * 0.5 * (1 + erf(x / sqrt 2))``, multiplied in an
order ONNX Runtime's own GELU fusion does not match). ONNX Runtime's contrib operators
``com.microsoft.MultiHeadAttention`` and ``com.microsoft.Gelu`` compute the same functions in one kernel each,
without writing the intermediate tensors.
The fused graph computes the same function up to float rounding; ONNX Runtime (Python and Node, so transformers.js and
onnx-asr) runs it.

Only the exact patterns are fused, so anything else (a rank-space attention, a graph from another exporter) is left
as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

CONTRIB_DOMAIN = "com.microsoft"


@dataclass
class _Graph:
    """Lookups over one graph: who makes and who reads each tensor, and constant values."""

    model: onnx.ModelProto

    def __post_init__(self) -> None:
        graph = self.model.graph
        self.producer = {out: n for n in graph.node for out in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for name in n.input:
                self.consumers.setdefault(name, []).append(n)
        self.outputs = {o.name for o in graph.output}
        self.initializers = {t.name: t for t in graph.initializer}

    def constant(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
        return None

    def only_reader(self, name: str) -> onnx.NodeProto | None:
        """The one node reading ``name``, if exactly one does and it is no graph output."""
        readers = self.consumers.get(name, [])
        return readers[0] if len(readers) == 1 and name not in self.outputs else None

    def made_by(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None


def _perm(node: onnx.NodeProto) -> list[int] | None:
    for attr in node.attribute:
        if attr.name == "perm":
            return list(attr.ints)
    return None


def _axis(node: onnx.NodeProto, default: int) -> int:
    for attr in node.attribute:
        if attr.name == "axis":
            return attr.i
    return default


def _scalar_operand(g: _Graph, node: onnx.NodeProto | None, op_type: str) -> tuple[str, float] | None:
    """If ``node`` is an ``op_type`` of a tensor and a scalar constant: that tensor's name and the constant."""
    if node is None or node.op_type != op_type:
        return None
    for i in (0, 1):
        c = g.constant(node.input[i])
        if c is not None and c.size == 1 and g.constant(node.input[1 - i]) is None:
            return node.input[1 - i], float(c.reshape(()))
    return None


def _heads(g: _Graph, name: str, perm: list[int]) -> tuple[onnx.NodeProto, onnx.NodeProto, int] | None:
    """The Transpose with ``perm`` that makes tensor ``name``, the Reshape into heads before it, and the number of
    heads; None unless that is exactly what makes it."""
    transpose = g.made_by(name, "Transpose")
    if transpose is None or _perm(transpose) != perm or g.only_reader(transpose.output[0]) is None:
        return None
    reshape = g.made_by(transpose.input[0], "Reshape")
    if reshape is None or g.only_reader(reshape.output[0]) is None:
        return None
    shape = g.constant(reshape.input[1])
    if shape is None or shape.shape != (4,) or shape[2] <= 0 or shape[3] <= 0:
        return None
    return transpose, reshape, int(shape[2])


@dataclass
class _Match:
    nodes: list[onnx.NodeProto]  # replaced by the fused node
    query: str
    key: str
    value: str
    output: str
    heads: int
    scale: float
    anchor: onnx.NodeProto  # the Softmax: its place in the graph and its module scopes go to the fused node


def _match(g: _Graph, softmax: onnx.NodeProto) -> _Match | None:
    if _axis(softmax, -1) not in (-1, 3):
        return None
    scores = g.made_by(softmax.input[0], "MatMul")
    weighted = g.only_reader(softmax.output[0])
    if scores is None or g.only_reader(scores.output[0]) is None or weighted is None:
        return None
    if weighted.op_type != "MatMul" or weighted.input[0] != softmax.output[0]:
        return None
    back = g.only_reader(weighted.output[0])
    if back is None or back.op_type != "Transpose" or _perm(back) != [0, 2, 1, 3]:
        return None
    merge = g.only_reader(back.output[0])
    if merge is None or merge.op_type != "Reshape":
        return None
    merged = g.constant(merge.input[1])
    if merged is None or merged.shape != (3,):
        return None
    parts = [_heads(g, scores.input[0], [0, 2, 1, 3]), _heads(g, scores.input[1], [0, 2, 3, 1]),
             _heads(g, weighted.input[1], [0, 2, 1, 3])]
    if any(p is None for p in parts) or len({p[2] for p in parts}) != 1:
        return None
    (q_t, q_r, heads), (k_t, k_r, _), (v_t, v_r, _) = parts
    query, scale, nodes_before = q_r.input[0], 1.0, []
    # A query scaled by a constant before the heads are split (as transformers' Whisper does): fold the scale in.
    mul = g.made_by(query, "Mul")
    if (scaled := _scalar_operand(g, mul, "Mul")) is not None and g.only_reader(query) is q_r:
        (query, scale), nodes_before = scaled, [mul]
    return _Match(nodes=[*nodes_before, q_r, q_t, k_r, k_t, v_r, v_t, scores, softmax, weighted, back, merge],
                  query=query, key=k_r.input[0], value=v_r.input[0], output=merge.output[0], heads=heads,
                  scale=scale, anchor=softmax)


def _gelu(g: _Graph, erf: onnx.NodeProto) -> tuple[list[onnx.NodeProto], str, str] | None:
    """The nodes of ``x * 0.5 * (1 + erf(x / sqrt 2))`` around ``erf`` (in any order of the products), its input
    and its output; None unless it is exactly that."""
    def constant_operand(node: onnx.NodeProto | None, op_type: str, value: float) -> str | None:
        """The other input of ``node`` if it is ``op_type`` with a scalar constant ``value``."""
        found = _scalar_operand(g, node, op_type)
        return found[0] if found is not None and abs(found[1] - value) <= 1e-6 * abs(value) else None

    divide = g.made_by(erf.input[0], "Div")
    x = constant_operand(divide, "Div", 2 ** 0.5)
    if x is None or divide.input[0] != x or g.only_reader(divide.output[0]) is not erf:
        return None
    add = g.only_reader(erf.output[0])
    if constant_operand(add, "Add", 1.0) != erf.output[0]:
        return None
    first = g.only_reader(add.output[0])
    if first is None or first.op_type != "Mul":
        return None
    second = g.only_reader(first.output[0])
    if second is None or second.op_type != "Mul":
        return None
    # 0.5 * (1 + erf), then x * that; or x * (1 + erf), then that * 0.5
    if constant_operand(first, "Mul", 0.5) == add.output[0] and set(second.input) == {x, first.output[0]}:
        return [divide, erf, add, first, second], x, second.output[0]
    if set(first.input) == {x, add.output[0]} and constant_operand(second, "Mul", 0.5) == first.output[0]:
        return [divide, erf, add, first, second], x, second.output[0]
    return None


def fuse_gelu(model: onnx.ModelProto) -> int:
    """Replace every exact GELU written as ``Div``, ``Erf``, ``Add``, ``Mul``, ``Mul`` by one ``com.microsoft.Gelu``
    node, in place; the number fused."""
    g = _Graph(model)
    replaced = []
    for node in model.graph.node:
        if node.op_type == "Erf" and (found := _gelu(g, node)) is not None:
            nodes, x, output = found
            fused = onnx.helper.make_node("Gelu", [x], [output], name=f"{node.name}_Gelu", domain=CONTRIB_DOMAIN)
            fused.metadata_props.extend(node.metadata_props)
            replaced.append((nodes, fused))
    # The fused node takes the place of the last product, after which every reader of the output comes.
    _replace(model, [(nodes, nodes[-1], fused) for nodes, fused in replaced])
    return len(replaced)


def _replace(model: onnx.ModelProto, replacements: list[tuple[list[onnx.NodeProto], onnx.NodeProto, onnx.NodeProto]]
             ) -> None:
    """Remove each group of nodes and put its fused node where its ``anchor`` was; drop initializers no node reads."""
    if not replacements:
        return
    removed = {id(n) for nodes, _, _ in replacements for n in nodes}
    at = {id(anchor): fused for _, anchor, fused in replacements}
    nodes = [at.get(id(n), n) for n in model.graph.node if id(n) not in removed or id(n) in at]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not any(o.domain == CONTRIB_DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(CONTRIB_DOMAIN, 1))
    used = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def fuse_encoder(model: onnx.ModelProto) -> dict[str, int]:
    """Both fusions of this module, in place: how many nodes of each fused operator ``model`` now has."""
    return {"MultiHeadAttention": fuse_attention(model), "Gelu": fuse_gelu(model)}


def fuse_attention(model: onnx.ModelProto) -> int:
    """Replace every eager self-attention pattern of ``model`` by one ``com.microsoft.MultiHeadAttention`` node, in
    place; the number of attentions fused (0 leaves the model unchanged)."""
    g = _Graph(model)
    matches = [m for n in model.graph.node if n.op_type == "Softmax" and (m := _match(g, n)) is not None]
    replacements = []
    for m in matches:
        node = onnx.helper.make_node("MultiHeadAttention", [m.query, m.key, m.value], [m.output],
                                     name=f"{m.anchor.name}_MultiHeadAttention", domain=CONTRIB_DOMAIN,
                                     num_heads=m.heads, scale=m.scale)
        node.metadata_props.extend(m.anchor.metadata_props)
        # The fused node takes the Softmax's place: its inputs (query, key, value) are made before it, and every
        # reader of the output comes after the final Reshape, which comes after the Softmax.
        replacements.append((m.nodes, m.anchor, node))
    _replace(model, replacements)
    return len(matches)
