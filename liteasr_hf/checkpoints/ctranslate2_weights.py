"""Map the variables of a CTranslate2 Whisper checkpoint onto Transformers' Whisper state dict.

:func:`whisper_shape` reads Whisper's dimensions off the tensors; :func:`whisper_state_dict` renames every
variable to its ``WhisperForConditionalGeneration`` parameter, splits the fused attention projections,
dequantizes int8/int16 weights and refuses runtime switches Transformers' Whisper cannot represent.

The weight names follow ``python/ctranslate2/converters/transformers.py`` (``WhisperLoader``) of CTranslate2 4.x,
whose conversion this module inverts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from .ctranslate2_format import Ct2Checkpoint

# Runtime switches CTranslate2 stores next to the weights. Transformers' Whisper hard-codes each of them, so a
# checkpoint can only be imported when it holds Whisper's value.
_WHISPER_SWITCHES = {
    "decoder/activation": 3,  # common_spec.Activation.GELU
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/alibi": 0,
    "decoder/alibi_use_positive_positions": 0,  # absent from files written by older CTranslate2
    "decoder/scale_alibi": 0,  # idem
    "decoder/start_from_zero_embedding": 0,
}
# CTranslate2's defaults for ``return_attention``; the alignment heads of config.json supersede them.
_IGNORED_SCALARS = {"decoder/alignment_layer", "decoder/alignment_heads"}
_HEADS = {"encoder": "encoder/num_heads", "decoder": "decoder/num_heads"}


@dataclass(frozen=True)
class WhisperShape:
    """Whisper hyper-parameters read off the tensor shapes (and the two ``num_heads`` scalars)."""

    vocab_size: int
    num_mel_bins: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    max_source_positions: int
    max_target_positions: int
    tied_projection: bool


class _Consumer:
    """Hands out variables by name, remembering what is missing and what was never asked for."""

    def __init__(self, variables: dict[str, np.ndarray], where: str) -> None:
        self.pending = dict(variables)
        self.missing: list[str] = []
        self.where = where

    def take(self, name: str) -> np.ndarray | None:
        if name not in self.pending:
            self.missing.append(name)
            return None
        return self.pending.pop(name)

    def check(self) -> None:
        problems = []
        if self.missing:
            problems.append(f"missing variables: {', '.join(self.missing)}")
        if self.pending:
            unused = ", ".join(sorted(self.pending))
            problems.append(f"variables with no place in WhisperForConditionalGeneration: {unused}")
        if problems:
            raise ValueError(f"{self.where}: not a Whisper checkpoint Transformers can hold; " + "; ".join(problems))


def _dequantize(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fold ``X/weight_scale`` back into ``X/weight`` for int8/int16-quantized checkpoints (float32 result)."""
    out = dict(variables)
    for scale_name in [n for n in variables if n.endswith("/weight_scale")]:
        weight_name = scale_name.removesuffix("_scale")
        if weight_name not in out:
            continue  # reported as a leftover variable by _Consumer
        scale = out.pop(scale_name).astype(np.float32)
        weight = out[weight_name].astype(np.float32)
        # int16: one scale for the whole tensor; int8: one per output row (conv: per output channel).
        out[weight_name] = weight / (scale if scale.ndim == 0 else scale.reshape(-1, *[1] * (weight.ndim - 1)))
    return out


def _layer_count(names: list[str], stack: str) -> int:
    indices = {int(m.group(1)) for n in names if (m := re.match(rf"{stack}/layer_(\d+)/", n))}
    return max(indices) + 1 if indices else 0


def whisper_shape(ckpt: Ct2Checkpoint, where: str = "model.bin") -> WhisperShape:
    """Read Whisper's dimensions from a checkpoint; raises ``ValueError`` when it is not a Whisper model."""
    if ckpt.spec_name != "WhisperSpec":
        raise ValueError(f"{where}: model spec is {ckpt.spec_name!r}, expected 'WhisperSpec'.")
    v = ckpt.variables
    needed = [
        "decoder/embeddings/weight",
        "encoder/conv1/weight",
        "encoder/layer_0/ffn/linear_0/weight",
        "decoder/layer_0/ffn/linear_0/weight",
        "encoder/position_encodings/encodings",
        "decoder/position_encodings/encodings",
        *_HEADS.values(),
    ]
    if absent := [n for n in needed if n not in v]:
        raise ValueError(f"{where}: not a Whisper checkpoint, missing {', '.join(absent)}.")
    vocab_size, d_model = v["decoder/embeddings/weight"].shape
    projection = ckpt.aliases.get("decoder/projection/weight")
    tied = projection == "decoder/embeddings/weight" or (
        "decoder/projection/weight" in v
        and np.array_equal(v["decoder/projection/weight"], v["decoder/embeddings/weight"])
    )
    names = list(v)
    shape = WhisperShape(
        vocab_size=int(vocab_size),
        num_mel_bins=int(v["encoder/conv1/weight"].shape[1]),
        d_model=int(d_model),
        encoder_layers=_layer_count(names, "encoder"),
        decoder_layers=_layer_count(names, "decoder"),
        encoder_attention_heads=int(v[_HEADS["encoder"]]),
        decoder_attention_heads=int(v[_HEADS["decoder"]]),
        encoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(v["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(v["decoder/position_encodings/encodings"].shape[0]),
        tied_projection=tied,
    )
    for stack in ("encoder", "decoder"):
        heads = getattr(shape, f"{stack}_attention_heads")
        if heads <= 0 or d_model % heads:
            raise ValueError(f"{where}: {stack}/num_heads = {heads} does not divide d_model = {d_model}.")
    return shape


def whisper_state_dict(ckpt: Ct2Checkpoint, where: str = "model.bin") -> tuple[WhisperShape, dict[str, np.ndarray]]:
    """Map every CTranslate2 variable onto ``WhisperForConditionalGeneration``'s state dict.

    Returns numpy arrays in the stored dtype (float32 after dequantization). ``proj_out.weight`` is left out
    when it is tied to the embeddings, as Transformers ties it on load.
    """
    shape = whisper_shape(ckpt, where)
    variables = {n: a for n, a in ckpt.variables.items() if a.ndim > 0}
    scalars = {n: a.item() for n, a in ckpt.variables.items() if a.ndim == 0}
    # Aliases are variables CTranslate2 stored once because their values were equal.
    variables.update({alias: ckpt.variables[target] for alias, target in ckpt.aliases.items()})

    wrong = [f"{n} = {scalars[n]} (Whisper needs {v})" for n, v in _WHISPER_SWITCHES.items() if scalars.get(n, v) != v]
    unknown = sorted(set(scalars) - set(_WHISPER_SWITCHES) - _IGNORED_SCALARS - set(_HEADS.values()))
    if wrong or unknown:
        raise ValueError(
            f"{where}: settings Transformers' Whisper cannot represent: "
            + "; ".join(wrong + [f"unknown scalar {n} = {scalars[n]}" for n in unknown])
        )

    src = _Consumer(_dequantize(variables), where)
    sd: dict[str, np.ndarray] = {}
    d = shape.d_model

    def put(hf: str, array: np.ndarray | None) -> None:
        if array is not None:
            sd[hf] = array

    def linear(ct2: str, hf: str) -> None:
        put(f"{hf}.weight", src.take(f"{ct2}/weight"))
        put(f"{hf}.bias", src.take(f"{ct2}/bias"))

    def layer_norm(ct2: str, hf: str) -> None:
        put(f"{hf}.weight", src.take(f"{ct2}/gamma"))
        put(f"{hf}.bias", src.take(f"{ct2}/beta"))

    def fused(ct2: str, hf_prefix: str, projections: Sequence[str]) -> None:
        # CTranslate2 concatenates q/k/v (or k/v) row-wise and pads k with a zero bias; Transformers' k_proj has
        # no bias. A k bias adds the same value to every score of a query, which softmax cancels: dropping it
        # is exact even for a checkpoint whose k bias is not zero.
        weight, bias = src.take(f"{ct2}/weight"), src.take(f"{ct2}/bias")
        for name, array in ((f"{ct2}/weight", weight), (f"{ct2}/bias", bias)):
            if array is not None and array.shape[0] != len(projections) * d:
                raise ValueError(f"{where}: {name} has {array.shape[0]} rows, expected {len(projections)} x {d}.")
        for i, proj in enumerate(projections):
            if weight is not None:
                put(f"{hf_prefix}.{proj}.weight", weight[i * d : (i + 1) * d])
            if bias is not None and proj != "k_proj":
                put(f"{hf_prefix}.{proj}.bias", bias[i * d : (i + 1) * d])

    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    put("model.encoder.embed_positions.weight", src.take("encoder/position_encodings/encodings"))
    layer_norm("encoder/layer_norm", "model.encoder.layer_norm")
    put("model.decoder.embed_tokens.weight", src.take("decoder/embeddings/weight"))
    put("model.decoder.embed_positions.weight", src.take("decoder/position_encodings/encodings"))
    layer_norm("decoder/layer_norm", "model.decoder.layer_norm")
    projection = src.take("decoder/projection/weight")
    if not shape.tied_projection:
        put("proj_out.weight", projection)

    layers = [("encoder", i) for i in range(shape.encoder_layers)]
    layers += [("decoder", i) for i in range(shape.decoder_layers)]
    for stack, i in tqdm(layers, desc="Mapping layers", unit="layer", leave=False):
        ct2, hf = f"{stack}/layer_{i}", f"model.{stack}.layers.{i}"
        layer_norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        fused(f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"))
        linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        if stack == "decoder":
            layer_norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
            fused(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn", ("q_proj",))
            fused(f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", ("k_proj", "v_proj"))
            linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
        layer_norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
        linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
        linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
    src.check()
    if integers := [name for name, array in sd.items() if array.dtype.kind != "f"]:
        raise ValueError(f"{where}: integer weights without a weight_scale to dequantize them: {', '.join(integers)}")
    return shape, sd
