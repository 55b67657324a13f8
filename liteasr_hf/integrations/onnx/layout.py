"""What every ONNX Whisper client expects, in one place: file names, input/output names, dynamic axes.

The names are those of optimum's Whisper export, which transformers.js and onnx-asr read: ``input_features`` ->
``last_hidden_state`` for the encoder; for the merged decoder ``input_ids``, ``encoder_hidden_states``,
``past_key_values.{i}.{decoder,encoder}.{key,value}`` and ``use_cache_branch`` in, ``logits`` and
``present.{i}.{decoder,encoder}.{key,value}`` out. Past tensors are ``(batch, heads, length, head_dim)`` with
heads and head_dim static: onnx-asr builds its empty first-step cache from those two dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass

#: File-name suffix per weight type, as transformers.js names its ``dtype`` option.
DTYPE_SUFFIXES = {"fp32": "", "fp16": "_fp16", "q8": "_quantized", "int8": "_int8", "uint8": "_uint8", "q4": "_q4"}
#: The quantized types ``--quantize`` takes (fp16 is a cast, set apart by ``--fp16``).
QUANTIZATIONS = ("q8", "int8", "uint8", "q4")

ENCODER = "encoder_model"
DECODER = "decoder_model_merged"
SUBFOLDER = "onnx"
#: Largest ONNX file without external data: protobuf's 2 GiB message limit.
PROTOBUF_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class OnnxLayout:
    """Names and dynamic axes of one Whisper model's ONNX graphs."""

    num_layers: int
    num_heads: int
    head_dim: int
    d_model: int
    num_mel_bins: int

    @classmethod
    def from_config(cls, config) -> "OnnxLayout":
        """The layout of a ``WhisperConfig`` or ``LiteWhisperConfig``."""
        return cls(config.decoder_layers, config.decoder_attention_heads,
                   config.d_model // config.decoder_attention_heads, config.d_model, config.num_mel_bins)

    # -- encoder --------------------------------------------------------------------------------------------------
    encoder_inputs = ("input_features",)
    encoder_outputs = ("last_hidden_state",)

    def encoder_axes(self) -> dict[str, dict[int, str]]:
        return {"input_features": {0: "batch_size"}, "last_hidden_state": {0: "batch_size"}}

    # -- decoder --------------------------------------------------------------------------------------------------
    def cache_names(self, prefix: str, kinds: tuple[str, ...] = ("decoder", "encoder")) -> list[str]:
        """``{prefix}.{i}.{kind}.{key,value}`` for every layer, in the order optimum writes them."""
        return [f"{prefix}.{i}.{kind}.{t}" for i in range(self.num_layers) for kind in kinds for t in ("key", "value")]

    def past_names(self) -> list[str]:
        return self.cache_names("past_key_values")

    def present_names(self) -> list[str]:
        return self.cache_names("present")

    def decoder_inputs(self) -> list[str]:
        return ["input_ids", "encoder_hidden_states", *self.past_names(), "use_cache_branch"]

    def decoder_outputs(self) -> list[str]:
        return ["logits", *self.present_names()]

    def decoder_axes(self) -> dict[str, dict[int, str]]:
        """Symbolic dimensions of the merged decoder's inputs and outputs; the others are static."""
        axes = {
            "input_ids": {0: "batch_size", 1: "decoder_sequence_length"},
            "encoder_hidden_states": {0: "batch_size", 1: "encoder_sequence_length / 2"},
            "logits": {0: "batch_size", 1: "decoder_sequence_length"},
        }
        for name in self.past_names():
            length = "past_decoder_sequence_length" if ".decoder." in name else "encoder_sequence_length_out"
            axes[name] = {0: "batch_size", 2: length}
        for name in self.present_names():
            length = ("past_decoder_sequence_length + decoder_sequence_length" if ".decoder." in name
                      else "encoder_sequence_length_out")
            axes[name] = {0: "batch_size", 2: length}
        return axes

    def file_name(self, graph: str, dtype: str = "fp32") -> str:
        """``encoder_model_quantized.onnx`` and the like."""
        return f"{graph}{DTYPE_SUFFIXES[dtype]}.onnx"
