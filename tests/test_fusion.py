"""Fusing the exported encoder's self-attention and GELUs into ONNX Runtime's MultiHeadAttention and Gelu: what
torch.onnx writes for Whisper's encoder is found in every layer, the fused graph computes the same output, and
anything else is left alone."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from liteasr_hf.integrations.onnx import export_onnx
from liteasr_hf.integrations.onnx.fusion import fuse_attention, fuse_encoder, fuse_gelu
from liteasr_hf.integrations.onnx.export import export_graphs


@pytest.fixture(scope="module")
def encoder_graph(tmp_path_factory) -> onnx.ModelProto:
    """The encoder graph torch.onnx writes for a small random Whisper (3 layers, 4 heads), unfused."""
    torch.manual_seed(0)
    config = WhisperConfig(d_model=64, encoder_layers=3, encoder_attention_heads=4, decoder_layers=1,
                           decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=80,
                           vocab_size=100, max_source_positions=1500, max_target_positions=32,
                           decoder_start_token_id=1, pad_token_id=0, eos_token_id=2, bos_token_id=2)
    config._attn_implementation = "eager"  # as export_onnx loads models
    model = WhisperForConditionalGeneration(config).eval()
    paths = export_graphs(model, tmp_path_factory.mktemp("graphs"), fuse=False)
    return onnx.load(paths["encoder"])


def _encode(model: onnx.ModelProto, features: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_features": features})[0]


def test_every_layer_is_fused_and_the_output_is_the_same(encoder_graph):
    fused = onnx.ModelProto()
    fused.CopyFrom(encoder_graph)
    # three attentions; five GELUs: after each of the two convolutions and in each layer's feed-forward block
    assert fuse_encoder(fused) == {"MultiHeadAttention": 3, "Gelu": 5}
    kinds = [n.op_type for n in fused.graph.node]
    assert kinds.count("MultiHeadAttention") == 3 and kinds.count("Gelu") == 5
    assert not {"Softmax", "Erf", "Div"} & set(kinds)  # nothing of the exporter's patterns is left
    assert kinds.count("Transpose") == 1  # the convolutions' output to (batch, frames, channels); no heads
    weights = {t.name for t in fused.graph.initializer}
    assert all(n.input[1] in weights for n in fused.graph.node if n.op_type == "MatMul")  # only weight products
    for node in (n for n in fused.graph.node if n.op_type == "MultiHeadAttention"):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["num_heads"] == 4 and attrs["scale"] == pytest.approx(16 ** -0.5)  # the query's scale folded in
    onnx.checker.check_model(fused)

    features = np.random.default_rng(0).standard_normal((2, 80, 3000)).astype(np.float32)
    expected, got = _encode(encoder_graph, features), _encode(fused, features)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_an_attention_whose_scores_are_read_elsewhere_is_left_alone(encoder_graph):
    """A graph that also outputs one layer's attention probabilities cannot lose them: that layer stays unfused."""
    model = onnx.ModelProto()
    model.CopyFrom(encoder_graph)
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(softmax.output[0]))
    assert fuse_attention(model) == 2
    assert softmax.output[0] in {o for n in model.graph.node for o in n.output}


def test_a_gelu_is_fused_in_either_order_of_its_products_and_an_approximate_one_is_not():
    def gelu(half_first: bool, root: float = 2 ** 0.5) -> onnx.ModelProto:
        h = onnx.helper
        consts = [h.make_tensor(name, onnx.TensorProto.FLOAT, [], [value])
                  for name, value in (("root", root), ("one", 1.0), ("half", 0.5))]
        nodes = [h.make_node("Div", ["x", "root"], ["d"]), h.make_node("Erf", ["d"], ["e"]),
                 h.make_node("Add", ["e", "one"], ["a"])]
        nodes += ([h.make_node("Mul", ["half", "a"], ["m"]), h.make_node("Mul", ["x", "m"], ["y"])] if half_first
                  else [h.make_node("Mul", ["a", "x"], ["m"]), h.make_node("Mul", ["m", "half"], ["y"])])
        io = [h.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [4, 8]) for n in ("x", "y")]
        return h.make_model(h.make_graph(nodes, "gelu", io[:1], io[1:], consts),
                            opset_imports=[h.make_opsetid("", 18)])

    x = np.linspace(-6, 6, 32, dtype=np.float32).reshape(4, 8)
    for half_first in (True, False):
        model = gelu(half_first)
        expected = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
        assert fuse_gelu(model) == 1
        assert [n.op_type for n in model.graph.node] == ["Gelu"] and not model.graph.initializer
        got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
        assert np.abs(got - expected).max() < 1e-6
    assert fuse_gelu(gelu(True, root=1.702)) == 0  # not x / sqrt(2): some other function, left alone


def test_a_graph_without_the_pattern_is_unchanged():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])
    model = onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Softmax", ["x"], ["y"])], "g",
                                                          [x], [y]))
    before = model.SerializeToString()
    assert fuse_attention(model) == 0
    assert model.SerializeToString() == before


def test_attention_in_8_bits_needs_the_unfused_graph(tiny_en_dir, tmp_path):
    with pytest.raises(ValueError, match="--no-fuse"):
        export_onnx(tiny_en_dir, tmp_path / "out", quantize=["q8"], progress=False,
                    q8_scheme="per-channel-7bit-outliers-first-layer-float-attention-8bit")
    assert not (tmp_path / "out").exists()
