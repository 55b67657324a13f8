"""The q8 schemes on small hand-built graphs: factor pairs are found, equalization is exact in float and evens out the
rank-space activations, calibration windows are fed one batch at a time, and bad schemes are refused by field."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from liteasr_hf.integrations.onnx.calibration import EncoderFeedReader
from liteasr_hf.integrations.onnx.factor_pairs import equalize_factor_pairs, factor_pairs, rank_space_maxima
from liteasr_hf.integrations.onnx.quantization import Q8_SCHEMES, Q8Scheme, float_nodes

MELS, RANK, OUT = 8, 4, 6


def _factored_graph(seed: int = 0) -> onnx.ModelProto:
    """``input_features (B, 8, 3000)`` -> transpose -> x @ w1 (8, 4) -> @ w2 (4, 6) -> + bias, and a dense product
    x @ w (8, 6) beside it; the rank-space columns of w1 differ in size by 1000x, as principal components do."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((MELS, RANK)).astype(np.float32) * np.array([10.0, 1.0, 0.1, 0.01], np.float32)
    w2 = rng.standard_normal((RANK, OUT)).astype(np.float32)
    dense = rng.standard_normal((MELS, OUT)).astype(np.float32)
    bias = rng.standard_normal(OUT).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["input_features"], ["x"], perm=[0, 2, 1], name="transpose"),
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
        helper.make_node("MatMul", ["h", "w2"], ["y"], name="second"),
        helper.make_node("Add", ["y", "bias"], ["factored"], name="add"),
        helper.make_node("MatMul", ["x", "dense"], ["plain"], name="dense"),
        helper.make_node("Add", ["factored", "plain"], ["last_hidden_state"], name="sum"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input_features", TensorProto.FLOAT, ["batch", MELS, 3000])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", 3000, OUT])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (dense, "dense"), (bias, "bias"))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, features: np.ndarray, output: str = "last_hidden_state") -> np.ndarray:
    if output != "last_hidden_state":
        model = onnx.ModelProto.FromString(model.SerializeToString())
        model.graph.output.append(helper.make_empty_tensor_value_info(output))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([output], {"input_features": features})[0]


def test_factor_pairs_are_found_and_small_ranks_left_in_float():
    model = _factored_graph()
    assert factor_pairs(model) == [("first", "second", RANK)]
    assert float_nodes(model, Q8Scheme("x", float_ranks_below=RANK + 1)) == ["first", "second"]
    assert float_nodes(model, Q8Scheme("x", float_ranks_below=RANK)) == []


def test_first_layers_are_found_by_the_module_scopes_the_exporter_records():
    model = _factored_graph()
    scheme = Q8Scheme("x", float_first_layers=1)
    with pytest.raises(ValueError, match="no node of this encoder graph names its layer: export it with"):
        float_nodes(model, scheme)
    scopes = {"first": "encoder.layers.0.fc1", "second": "encoder.layers.0.fc1", "dense": "encoder.layers.1.fc2"}
    for node in model.graph.node:
        if node.name in scopes:
            module = scopes[node.name]
            parts = module.split(".")
            chain = ["", *(".".join(parts[:i]) for i in range(1, len(parts) + 1)), "matmul"]
            node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(chain))
    assert float_nodes(model, scheme) == ["first", "second"]
    assert sorted(float_nodes(model, Q8Scheme("x", float_first_layers=2))) == ["dense", "first", "second"]
    assert float_nodes(model, Q8Scheme("x")) == []
    with pytest.raises(ValueError, match="float_first_layers = -1"):
        Q8Scheme("x", float_first_layers=-1)


def test_equalization_is_exact_in_float_and_evens_out_the_rank_space():
    model = _factored_graph()
    features = np.random.default_rng(1).standard_normal((3, MELS, 3000)).astype(np.float32)
    before, h_before = _run(model, features), _run(model, features, "h")
    maxima = rank_space_maxima(model, features)
    assert list(maxima) == ["first"] and maxima["first"].shape == (RANK,)
    np.testing.assert_allclose(maxima["first"], np.abs(h_before).max(axis=(0, 1)), rtol=1e-6)
    assert equalize_factor_pairs(model, maxima) == 1
    np.testing.assert_allclose(_run(model, features), before, rtol=1e-4, atol=1e-4)
    peaks = np.abs(_run(model, features, "h")).max(axis=(0, 1))
    assert peaks.max() / peaks.min() < 0.1 * maxima["first"].max() / maxima["first"].min()


def test_equalization_leaves_shared_weights_alone():
    model = _factored_graph()
    model.graph.node.append(helper.make_node("MatMul", ["h", "w2"], ["again"], name="reads_w2_too"))
    w2 = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w2")).copy()
    assert equalize_factor_pairs(model, {"first": np.ones(RANK, np.float32)}) == 0
    np.testing.assert_array_equal(numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w2")), w2)


def test_feed_reader_yields_batches_then_none():
    features = np.zeros((5, MELS, 3000), np.float32)
    reader = EncoderFeedReader(features, batch_size=2)
    sizes = []
    while (batch := reader.get_next()) is not None:
        sizes.append(len(batch["input_features"]))
    assert sizes == [2, 2, 1]
    reader.rewind()
    assert reader.get_next()["input_features"].shape == (2, MELS, 3000)
    with pytest.raises(ValueError, match="at least one window"):
        EncoderFeedReader(np.zeros((0, MELS, 3000), np.float32))


def test_bad_schemes_are_refused_by_field():
    with pytest.raises(ValueError, match="encoder_activations = 'sometimes'"):
        Q8Scheme("x", encoder_activations="sometimes")
    with pytest.raises(ValueError, match="float_ranks_below = -1"):
        Q8Scheme("x", float_ranks_below=-1)
    assert Q8_SCHEMES["per-tensor"] == Q8Scheme("per-tensor")  # what q8 wrote before the schemes


def _attention_graph(input_name: str = "input_features") -> onnx.ModelProto:
    """Two products of two activations, as attention has (layer 0's and layer 1's), then a weight of layer 1, with
    the module scopes torch.onnx records."""
    w = np.random.default_rng(2).standard_normal((MELS, MELS)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", [input_name], ["x"], perm=[0, 2, 1], name="transpose"),
        helper.make_node("MatMul", ["x", input_name], ["scores"], name="scores0"),
        helper.make_node("MatMul", ["scores", "x"], ["mixed"], name="scores1"),
        helper.make_node("MatMul", ["mixed", "w"], ["last_hidden_state"], name="proj"),
    ]
    for node, module in zip(nodes[1:], ("encoder.layers.0.self_attn", "encoder.layers.1.self_attn",
                                        "encoder.layers.1.self_attn.out_proj"), strict=True):
        parts = module.split(".")
        chain = ["", *(".".join(parts[:i]) for i in range(1, len(parts) + 1)), "matmul"]
        node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(chain))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", MELS, 30])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", 30, MELS])],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("input_name", ["input_features", "encoder_hidden_states"])
def test_attention_in_8_bits_quantizes_the_encoders_activation_products_past_its_first_layer(tmp_path, input_name):
    from liteasr_hf.integrations.onnx.quantization import quantize_file

    source = tmp_path / "model.onnx"
    onnx.save(_attention_graph(input_name), source)
    features = np.random.default_rng(3).standard_normal((2, MELS, 30)).astype(np.float32)
    exact = _run(onnx.load(source), features) if input_name == "input_features" else None
    float_products = {}
    for attention in (False, True):
        target = tmp_path / f"q8-{attention}.onnx"
        quantize_file(source, target, "q8", scheme=Q8Scheme("x", float_first_layers=1, quantize_attention=attention))
        quantized = onnx.load(target)
        float_products[attention] = sum(n.op_type == "MatMul" for n in quantized.graph.node)
        if exact is not None:
            got = _run(quantized, features)
            assert np.abs(got - exact).max() / np.abs(exact).max() < 0.05
    if input_name == "input_features":  # layer 1's product of two activations is quantized; layer 0's stays float
        assert (float_products[False], float_products[True]) == (2, 1)
    else:  # a decoder graph: the option is the encoder's only
        assert (float_products[False], float_products[True]) == (2, 2)
    with pytest.raises(ValueError, match="quantize_attention needs dynamic encoder activations"):
        Q8Scheme("x", encoder_activations="static", quantize_attention=True)


def _outlier_graph(seed: int = 0) -> onnx.ModelProto:
    """``input_features (B, 8, 3000)`` -> transpose -> channel 0 scaled by 1000 -> @ w (8, 6): one input channel far
    above the others, as in the GELU outputs that Whisper's later fc2 layers read."""
    rng = np.random.default_rng(seed)
    scale = np.ones(MELS, np.float32)
    scale[0] = 1000.0
    nodes = [
        helper.make_node("Transpose", ["input_features"], ["x"], perm=[0, 2, 1], name="transpose"),
        helper.make_node("Mul", ["x", "scale"], ["wide"], name="widen"),
        helper.make_node("MatMul", ["wide", "w"], ["last_hidden_state"], name="product"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input_features", TensorProto.FLOAT, ["batch", MELS, 3000])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", 3000, OUT])],
        [numpy_helper.from_array(scale, "scale"),
         numpy_helper.from_array(rng.standard_normal((MELS, OUT)).astype(np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_outlier_channels_split_off_exactly_and_the_rest_runs_in_8_bits(tmp_path):
    from liteasr_hf.integrations.onnx.activations import activation_statistics
    from liteasr_hf.integrations.onnx.outlier_channels import FLOAT_SUFFIX, outlier_channels, split_outlier_channels
    from liteasr_hf.integrations.onnx.quantization import quantize_file

    features = np.random.default_rng(1).standard_normal((2, MELS, 3000)).astype(np.float32)
    model = _outlier_graph()
    exact = _run(model, features)
    stats = activation_statistics(model, ["wide"], features)["wide"]
    assert stats.peak_to_rms > 10
    channels = outlier_channels(stats, 6.0)
    assert channels.tolist() == [0]  # without it the rest peaks about 4.5 times its own RMS
    assert outlier_channels(stats, 2.0) is None  # 2.0 would take every channel: over 5% of them
    assert outlier_channels(stats, 20.0).tolist() == []  # the whole tensor is already within 20
    split = onnx.ModelProto.FromString(model.SerializeToString())
    assert split_outlier_channels(split, {"product": channels}) == [f"product{FLOAT_SUFFIX}"]
    onnx.checker.check_model(split)
    assert "w" not in {t.name for t in split.graph.initializer}  # the original weight is read by no node now
    np.testing.assert_allclose(_run(split, features), exact, rtol=1e-5, atol=1e-3)

    source = tmp_path / "model.onnx"
    onnx.save(model, source)
    errors, integer_products = {}, {}
    schemes = {"whole product float": Q8Scheme("a", per_channel=True, float_peak_to_rms=10.0),
               "outlier channels float": Q8Scheme("b", per_channel=True, float_peak_to_rms=10.0,
                                                  float_channel_peak_to_rms=6.0),
               # 2.0 would split off every channel: the product stays whole in float instead
               "too many outlier channels": Q8Scheme("d", per_channel=True, float_peak_to_rms=10.0,
                                                     float_channel_peak_to_rms=2.0),
               "all 8 bits": Q8Scheme("c", per_channel=True)}
    for label, scheme in schemes.items():
        target = tmp_path / f"{scheme.name}.onnx"
        quantize_file(source, target, "q8", scheme=scheme, calibration=features)
        quantized = onnx.load(target)
        integer_products[label] = sum(n.op_type == "MatMulInteger" for n in quantized.graph.node)
        errors[label] = np.abs(_run(quantized, features) - exact).max() / np.abs(exact).max()
    assert integer_products == {"whole product float": 0, "outlier channels float": 1, "too many outlier channels": 0,
                                "all 8 bits": 1}
    assert errors["whole product float"] < 1e-6 and errors["too many outlier channels"] < 1e-6
    # one scale set by channel 0 rounds the other seven channels away; split off, they keep their precision
    assert errors["outlier channels float"] < 0.2 * errors["all 8 bits"], errors


def test_outlier_channel_schemes_are_refused_without_their_product_rule():
    with pytest.raises(ValueError, match="set float_peak_to_rms too"):
        Q8Scheme("x", float_channel_peak_to_rms=30.0)
    with pytest.raises(ValueError, match="float_channel_peak_to_rms = 1"):
        Q8Scheme("x", float_peak_to_rms=100.0, float_channel_peak_to_rms=1)
    with pytest.raises(ValueError, match="not a product by a constant weight"):
        from liteasr_hf.integrations.onnx.outlier_channels import split_outlier_channels

        split_outlier_channels(_outlier_graph(), {"widen": np.array([0])})
