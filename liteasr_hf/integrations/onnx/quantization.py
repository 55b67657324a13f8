"""Smaller variants of an exported graph: ONNX Runtime's 8-bit quantization, 4-bit weight blocks, fp16.

Only the weights of matrix products are quantized (``MatMul``, ``Gemm``); convolutions stay in float, because
ONNX Runtime's ``ConvInteger`` takes unsigned weights only and the two input convolutions are a small part of
the encoder. In a LiteWhisper encoder every factor of a factorized layer is its own ``MatMul`` and is quantized
like a dense weight. How ``q8`` quantizes is a :class:`Q8Scheme`: weights per tensor or per output column,
activations of the encoder dynamic (each input's range at run time) or static (QDQ, ranges calibrated on speech).
The decoders are always quantized dynamically: ONNX Runtime's static quantizer does not enter the merged decoder's
``If`` branches, calibrating the two graphs apart would need a decoding loop feeding real caches, and a decoder
step reads one token, whose range a dynamic quantizer measures exactly at no real cost. The names follow transformers.js's ``dtype`` option: ``q8`` (its default 8-bit name, written
as ``*_quantized.onnx``) and ``int8`` are signed 8-bit weights, ``uint8`` unsigned, ``q4`` 4-bit blocks of 32.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from .layout import QUANTIZATIONS

Q4_BLOCK_SIZE = 32
ENCODER_ACTIVATIONS = ("dynamic", "static")


@dataclass(frozen=True)
class Q8Scheme:
    """How ``q8`` (and ``int8``, ``uint8``) quantize: signed 8-bit weights of every ``MatMul``/``Gemm`` with a
    constant weight, one scale per tensor or per output column (``per_channel``); the encoder's activations
    ``dynamic`` or ``static`` (QDQ, unsigned 8-bit, MinMax ranges from calibration audio); ``reduce_range`` keeps
    weights to 7 bits, so that AVX2 CPUs without VNNI cannot saturate their 16-bit sums of u8*s8 products;
    ``float_ranks_below``: both matrix products of a factor pair whose rank is below this stay in float;
    ``equalize_factors``: the rank-space activations of factor pairs evened out first on calibration audio
    (:mod:`.factor_pairs`), exact in float; ``float_peak_to_rms``: a product whose input's peak is more than this
    many times its root mean square on calibration audio stays in float (Whisper's last ``fc2`` reads one GELU
    channel hundreds of times larger than the rest, which a per-tensor activation scale cannot hold);
    ``float_first_layers``: every product of the encoder's first N layers stays in float (the first layer reads the
    convolutions and the position table, and its rounding passes through every later layer: in whisper-base and the
    ``base`` preset it is half of the q8 encoder's error); ``quantize_attention``: the encoder's products of two
    activations (attention's scores and its weighted sum of values, over 1500 frames) are quantized too, both inputs
    dynamically per tensor, outside the first ``float_first_layers`` layers. They are most of a q8 encoder's time in
    float, and a low rank does not shrink them. ``float_channel_peak_to_rms``: with ``float_peak_to_rms``, a product
    over that ratio keeps in float only its fewest largest input channels without which the rest peaks at most this
    many times its own root mean square, beside the 8-bit product of the rest (:mod:`.outlier_channels`; the whole
    product stays float where that takes over 5% of the channels and over one); None: the whole product stays in
    float."""

    name: str
    encoder_activations: str = "dynamic"
    per_channel: bool = False
    reduce_range: bool = False
    float_ranks_below: int = 0
    equalize_factors: bool = False
    float_peak_to_rms: float | None = None
    float_first_layers: int = 0
    quantize_attention: bool = False
    float_channel_peak_to_rms: float | None = None

    def __post_init__(self) -> None:
        if self.encoder_activations not in ENCODER_ACTIVATIONS:
            raise ValueError(f"Q8Scheme.encoder_activations = {self.encoder_activations!r}: choose from "
                             f"{', '.join(ENCODER_ACTIVATIONS)}.")
        if self.float_ranks_below < 0:
            raise ValueError(f"Q8Scheme.float_ranks_below = {self.float_ranks_below}: give a rank >= 0.")
        if self.float_first_layers < 0:
            raise ValueError(f"Q8Scheme.float_first_layers = {self.float_first_layers}: give a number of layers >= 0.")
        if self.quantize_attention and self.encoder_activations != "dynamic":
            raise ValueError(f"Q8Scheme {self.name!r}: quantize_attention needs dynamic encoder activations (a "
                             "product of two activations has no weight whose range calibration could fix).")
        if self.float_peak_to_rms is not None and self.float_peak_to_rms <= 1:
            raise ValueError(f"Q8Scheme.float_peak_to_rms = {self.float_peak_to_rms}: give a ratio above 1, or None.")
        if self.float_channel_peak_to_rms is not None:
            if self.float_peak_to_rms is None:
                raise ValueError(f"Q8Scheme {self.name!r}: float_channel_peak_to_rms splits the products that "
                                 "float_peak_to_rms finds; set float_peak_to_rms too.")
            if self.float_channel_peak_to_rms <= 1:
                raise ValueError(f"Q8Scheme.float_channel_peak_to_rms = {self.float_channel_peak_to_rms}: give a "
                                 "ratio above 1, or None.")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def calibration_uses(self) -> tuple[str, ...]:
        """What the encoder's quantization measures on calibration audio (empty: it reads none)."""
        return tuple(use for use, on in (
            ("MinMax ranges of the quantized products' inputs (static activations)",
             self.encoder_activations == "static"),
            ("peak per rank-space column of every factor pair (equalization)", self.equalize_factors),
            (f"peak-to-RMS ratio of every product's input (float above {self.float_peak_to_rms})",
             self.float_peak_to_rms is not None),
            (f"peak and RMS per input channel of those products (the largest channels split off into float until "
             f"the rest peaks at most {self.float_channel_peak_to_rms} times its RMS)",
             self.float_channel_peak_to_rms is not None),
        ) if on)

    @property
    def calibrated(self) -> bool:
        """Whether the encoder's quantization reads calibration audio."""
        return bool(self.calibration_uses)


#: The schemes compared for ``q8`` (:mod:`.q8_comparison`; docs/results/q8-tiny-cpu.json); ``per-tensor`` is what
#: ``q8`` wrote before. Measured on tiny.en and a compressed tiny.en, on an AVX2 CPU without VNNI: full 8-bit
#: per-channel weights saturate ONNX Runtime's u8*s8 kernels (encoder error twice per-tensor's), 7 bits do not; static
#: MinMax ranges are far worse than each input's own range (WER +89); equalizing the rank space changes nothing
#: measurable; leaving the last fc2 in float removes a quarter of the remaining encoder error. On whisper-base and the
#: ``base`` preset (docs/results/q8-base-cpu.json) the first encoder layer's products are half of what remains: in
#: float they halve the encoder's error (0.100 -> 0.049, 0.108 -> 0.057) for 4-11% of the q8 encoder's speed. On a
#: CPU with VNNI 8-bit weights do not saturate (docs/results/q8-tiny-vnni-cpu.json: 0.096 against 7 bits' 0.103), but
#: an export runs on whatever CPU its users have, so the default keeps 7 bits. Quantizing attention's products of two
#: activations as well (``...-attention-8bit``) more than triples tiny.en's encoder error (0.050 -> 0.179,
#: docs/results/q8-tiny-attention-cpu.json): attention stays in float. The products left whole in float for their
#: outliers (fc2 of whisper-base's last three layers) made fc2 take twice fc1's time for the same FLOPs
#: (docs/results/onnx-base-q8-parts-cpu.json); splitting off only their 7-81 largest input channels
#: (``...-outlier-channels-...``, docs/results/onnx-base-encoders-cpu.json, onnx-base-cpu.json) makes the q8 encoders
#: of whisper-base and both base presets 7-17% faster and a fifth smaller, and q8 then costs
#: them -0.42 to +0.59 WER on real speech against fp32 (the former default: up to +4.58, from runaway outputs).
Q8_SCHEMES = {s.name: s for s in (
    Q8Scheme("per-tensor"),
    Q8Scheme("per-channel", per_channel=True),
    Q8Scheme("per-channel-7bit", per_channel=True, reduce_range=True),
    Q8Scheme("static-per-channel", encoder_activations="static", per_channel=True),
    Q8Scheme("static-per-channel-7bit", encoder_activations="static", per_channel=True, reduce_range=True),
    Q8Scheme("per-tensor-equalized", equalize_factors=True),
    Q8Scheme("per-channel-7bit-equalized", per_channel=True, reduce_range=True, equalize_factors=True),
    Q8Scheme("per-channel-7bit-outliers-float", per_channel=True, reduce_range=True, float_peak_to_rms=100.0),
    Q8Scheme("per-channel-7bit-outliers-first-layer-float", per_channel=True, reduce_range=True,
             float_peak_to_rms=100.0, float_first_layers=1),
    Q8Scheme("per-channel-7bit-outliers-first-layer-float-attention-8bit", per_channel=True, reduce_range=True,
             float_peak_to_rms=100.0, float_first_layers=1, quantize_attention=True),
    Q8Scheme("per-channel-7bit-outlier-channels-first-layer-float", per_channel=True, reduce_range=True,
             float_peak_to_rms=100.0, float_first_layers=1, float_channel_peak_to_rms=50.0),
)}
#: What ``q8`` writes unless told otherwise.
DEFAULT_Q8_SCHEME = Q8_SCHEMES["per-channel-7bit-outlier-channels-first-layer-float"]


def check_quantizations(names) -> tuple[str, ...]:
    """The requested variants, validated: unknown names raise with the list of known ones."""
    names = tuple(dict.fromkeys(names or ()))
    unknown = [n for n in names if n not in QUANTIZATIONS]
    if unknown:
        raise ValueError(f"Unknown quantization {', '.join(map(repr, unknown))}: "
                         f"choose from {', '.join(QUANTIZATIONS)}.")
    return names


@contextlib.contextmanager
def quiet_logger(name: str | None = None) -> Iterator[None]:
    """Only errors from the logger ``name`` (None: the root logger) while the block runs."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


ENCODER_LAYER_SCOPE = re.compile(r"(?:^|\.)encoder\.layers\.(\d+)$")


def encoder_layer(node: onnx.NodeProto) -> int | None:
    """The index of the encoder layer ``node`` was exported from, read from the module scopes that
    ``torch.onnx.export`` records on each node (``pkg.torch.onnx.name_scopes``); None outside the encoder's layers."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:  # a list of module names, written as a Python literal (never evaluated as code)
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            layers = [int(m.group(1)) for scope in scopes if isinstance(scope, str)
                      and (m := ENCODER_LAYER_SCOPE.search(scope))]
            return layers[-1] if layers else None
    return None


def is_encoder(model: onnx.ModelProto) -> bool:
    """Whether ``model`` is an encoder graph: one that reads ``input_features``."""
    return any(i.name == "input_features" for i in model.graph.input)


def float_nodes(model: onnx.ModelProto, scheme: Q8Scheme, calibration: np.ndarray | None = None) -> list[str]:
    """The nodes ``scheme`` leaves in float: both products of every factor pair of rank below
    ``scheme.float_ranks_below``, every product by a constant weight in the encoder's first
    ``scheme.float_first_layers`` layers (of an encoder graph: one that reads ``input_features``; with
    ``scheme.quantize_attention`` their products of two activations too), and with
    ``calibration`` windows (``model`` then with its weights loaded) every such product whose input's peak-to-RMS
    ratio passes ``scheme.float_peak_to_rms``."""
    from .factor_pairs import factor_pairs

    names = [name for first, second, rank in factor_pairs(model) if rank < scheme.float_ranks_below
             for name in (first, second)]
    weights = {t.name for t in model.graph.initializer}
    products = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights]
    if scheme.float_first_layers and is_encoder(model):
        # with quantize_attention, the first layers' products of two activations stay float too
        candidates = ([n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")] if scheme.quantize_attention
                      else products)
        layers = {n.name: encoder_layer(n) for n in candidates}
        if all(layer is None for layer in layers.values()):
            raise ValueError(f"Q8 scheme {scheme.name!r} keeps the encoder's first {scheme.float_first_layers} "
                             "layer(s) in float, but no node of this encoder graph names its layer: export it with "
                             "`liteasr export-onnx` (torch.onnx records each node's module), or pick another scheme.")
        names += [name for name, layer in layers.items()
                  if layer is not None and layer < scheme.float_first_layers and name not in names]
    if scheme.float_peak_to_rms is not None and calibration is not None:
        from .activations import activation_statistics

        stats = activation_statistics(model, [n.input[0] for n in products], calibration)
        names += [n.name for n in products
                  if stats[n.input[0]].peak_to_rms > scheme.float_peak_to_rms and n.name not in names]
    return names


def quantize_file(source: Path, target: Path, kind: str, external_data: bool = False,
                  scheme: Q8Scheme = DEFAULT_Q8_SCHEME, calibration: np.ndarray | None = None) -> None:
    """Write the ``kind`` variant of the ONNX file ``source`` to ``target``; 8-bit kinds follow ``scheme``, whose
    static activations are calibrated on ``calibration``, log-mel windows ``(n, mels, 3000)`` (an encoder graph
    only: pass None for the decoders, which are then quantized dynamically)."""
    from onnxruntime.quantization import QuantType

    if kind in ("q8", "int8", "uint8"):
        weight_type = QuantType.QUInt8 if kind == "uint8" else QuantType.QInt8
        if scheme.equalize_factors and calibration is not None:
            source = _equalized(source, target.with_name(f"{target.stem}_equalized.onnx"), calibration)
        probe = calibration is not None and scheme.float_peak_to_rms is not None  # needs the weights
        graph = onnx.load(source, load_external_data=probe)
        if probe and scheme.float_channel_peak_to_rms is not None and is_encoder(graph):
            split, whole = _split_outliers(graph, scheme, calibration)
            if split:
                source = target.with_name(f"{target.stem}_split.onnx")
                onnx.save_model(graph, source, save_as_external_data=True, location=f"{source.name}_data")
                graph = onnx.load(source)  # saving moved the weights out of the graph in memory
            # the split already read every product's input on the calibration windows: no second pass
            excluded = [*float_nodes(graph, scheme), *split, *whole]
        else:
            excluded = float_nodes(graph, scheme, calibration)
        if scheme.encoder_activations == "static" and calibration is not None:
            _quantize_static(source, target, scheme, weight_type, calibration, excluded, external_data)
        else:
            _quantize_dynamic(source, target, scheme, weight_type, excluded, external_data,
                              attention=scheme.quantize_attention and is_encoder(graph))
    elif kind == "q4":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(onnx.load(source), bits=4, block_size=Q4_BLOCK_SIZE, is_symmetric=True,
                                         op_types_to_quantize=("MatMul",))
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=external_data)
    else:
        raise ValueError(f"Unknown quantization {kind!r}: choose from {', '.join(QUANTIZATIONS)}.")


def weight_products(path: str | Path) -> dict[str, int]:
    """How many products by a constant weight the ONNX file ``path`` runs in ``8-bit`` and in ``float``, and of the
    float ones how many are ``outlier channels`` split off an 8-bit product (:mod:`.outlier_channels`)."""
    from .outlier_channels import FLOAT_SUFFIX

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights for o in n.output}
    counts = {"8-bit": 0, "float": 0, "outlier channels": 0}
    for node in graph.node:
        if node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearMatMul"):
            counts["8-bit"] += 1
        elif node.op_type in ("MatMul", "Gemm") and node.input[1] in dequantized:  # static QDQ
            counts["8-bit"] += 1
        elif node.op_type in ("MatMul", "Gemm") and node.input[1] in weights:
            counts["float"] += 1
            counts["outlier channels"] += node.name.endswith(FLOAT_SUFFIX)
    return counts


def _split_outliers(graph: onnx.ModelProto, scheme: Q8Scheme,
                    calibration: np.ndarray) -> tuple[list[str], list[str]]:
    """Split, in place, the outlier input channels of every product of ``graph`` that ``scheme.float_peak_to_rms``
    would leave in float (outside the float first layers); the names of the float side products, and of the
    products whose outliers are too many to split, which stay whole in float."""
    from .activations import activation_statistics
    from .outlier_channels import outlier_channels, split_outlier_channels

    weights = {t.name for t in graph.graph.initializer}
    first = set(float_nodes(graph, replace(scheme, float_peak_to_rms=None, float_channel_peak_to_rms=None)))
    products = [n for n in graph.graph.node
                if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights and n.name not in first]
    stats = activation_statistics(graph, [n.input[0] for n in products], calibration)
    channels = {n.name: outlier_channels(stats[n.input[0]], scheme.float_channel_peak_to_rms)
                if n.op_type == "MatMul" else None
                for n in products if stats[n.input[0]].peak_to_rms > scheme.float_peak_to_rms}
    # where too many channels stand out (or the product is a Gemm), it stays whole in float
    whole = [name for name, idx in channels.items() if idx is None]
    return split_outlier_channels(graph, {name: idx for name, idx in channels.items() if idx is not None}), whole


def _equalized(source: Path, target: Path, calibration: np.ndarray) -> Path:
    """``source`` with its factor pairs' rank-space activations evened out on ``calibration``, saved to ``target``."""
    from .factor_pairs import equalize_factor_pairs, rank_space_maxima

    model = onnx.load(source)
    equalize_factor_pairs(model, rank_space_maxima(model, calibration))
    onnx.save_model(model, target, save_as_external_data=True, location=f"{target.name}_data")
    return target


def _quantize_dynamic(source: Path, target: Path, scheme: Q8Scheme, weight_type, excluded: list[str],
                      external_data: bool, attention: bool = False) -> None:
    """``attention``: products of two activations are quantized too (ONNX Runtime's default leaves them float)."""
    from onnxruntime.quantization import quantize_dynamic

    # onnxruntime.quantization advises shape pre-processing through the root logger on every call
    with quiet_logger():
        quantize_dynamic(
            source, target, op_types_to_quantize=["MatMul", "Gemm"], per_channel=scheme.per_channel,
            reduce_range=scheme.reduce_range, weight_type=weight_type, use_external_data_format=external_data,
            nodes_to_exclude=excluded, extra_options={"MatMulConstBOnly": not attention},
        )


def _quantize_static(source: Path, target: Path, scheme: Q8Scheme, weight_type, calibration: np.ndarray,
                     excluded: list[str], external_data: bool) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from .calibration import EncoderFeedReader

    # onnxruntime.quantization advises shape pre-processing through the root logger on every call
    with quiet_logger():
        quantize_static(
            source, target, EncoderFeedReader(calibration), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Gemm"], per_channel=scheme.per_channel, reduce_range=scheme.reduce_range,
            activation_type=QuantType.QUInt8, weight_type=weight_type, use_external_data_format=external_data,
            nodes_to_exclude=excluded,
            calibrate_method=CalibrationMethod.MinMax,
            # Attention's activation-by-activation products stay float, as in dynamic mode. Memory stays small: the
            # MinMax calibrator's graph returns each tensor's minimum and maximum per batch, not the tensor.
            extra_options={"MatMulConstBOnly": True},
        )


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
