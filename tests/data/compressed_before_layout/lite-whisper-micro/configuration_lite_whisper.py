"""LiteWhisper configuration: a Whisper configuration plus the per-layer ranks of the encoder.

This file travels to the Hugging Face Hub next to the weights: it imports only transformers.
"""

from __future__ import annotations

from transformers import WhisperConfig

#: Encoder modules that LiteASR may factorize, in the order they run inside a layer.
LOW_RANK_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")

#: How an encoder layer computes self-attention: ``full`` projects q, k, v to the model dimension and runs the
#: configured attention implementation; ``rank_space`` attends in the rank space of low-rank k and v (see
#: ``LiteWhisperAttention``); ``auto`` lets a cost model choose per layer at run time.
ATTENTION_PATHS = ("auto", "full", "rank_space")

#: Classes a saved folder (or Hub repo) loads with ``trust_remote_code=True``.
AUTO_MAP = {
    "AutoConfig": "configuration_lite_whisper.LiteWhisperConfig",
    "AutoModel": "modeling_lite_whisper.LiteWhisperModel",
    "AutoModelForSpeechSeq2Seq": "modeling_lite_whisper.LiteWhisperForConditionalGeneration",
}

#: The ASR pipeline decides Whisper handling by ``model_type == "whisper"``; this custom pipeline gives a
#: ``lite-whisper`` model the same (chunking, long-form, timestamps) behaviour.
CUSTOM_PIPELINES = {
    "automatic-speech-recognition": {
        "impl": "pipeline_lite_whisper.LiteWhisperSpeechRecognitionPipeline",
        "pt": ["AutoModelForSpeechSeq2Seq"],
        "tf": [],
        "type": "audio",
    }
}


class LiteWhisperConfig(WhisperConfig):
    r"""Configuration of a Whisper model whose encoder linear layers are low-rank factorized.

    Args:
        low_rank_config (`list[dict[str, int]]`, *optional*):
            One dict per encoder layer mapping a module name (`q_proj`, `k_proj`, `v_proj`, `out_proj`, `fc1`,
            `fc2`) to its rank. A module that is absent stays dense. `None` or `[]` means no factorization.
        attention_path (`str` or `list[str]`, *optional*, defaults to `"auto"`):
            How encoder self-attention is computed: `"auto"` (a cost model picks the cheaper path per layer),
            `"full"` or `"rank_space"` for every layer, or one of these per encoder layer. `"rank_space"`
            needs low-rank `k_proj` and `v_proj` in that layer.
        **kwargs: everything [`WhisperConfig`] takes.
    """

    model_type = "lite-whisper"

    def __init__(
        self,
        low_rank_config: list[dict[str, int]] | None = None,
        attention_path: str | list[str] = "auto",
        **kwargs,
    ):
        # Saving copies this package's code files next to the weights, so the map always names them, even
        # for a published config whose auto_map named only some classes or another repo.
        kwargs["auto_map"] = dict(AUTO_MAP)
        kwargs["custom_pipelines"] = {task: dict(spec) for task, spec in CUSTOM_PIPELINES.items()}
        super().__init__(**kwargs)
        low_rank_config = [] if low_rank_config is None else low_rank_config
        validate_low_rank_config(low_rank_config, self.encoder_layers, self.d_model, self.encoder_ffn_dim)
        self.low_rank_config = [dict(ranks) for ranks in low_rank_config]
        validate_attention_path(attention_path, self.low_rank_config, self.encoder_layers)
        self.attention_path = attention_path if isinstance(attention_path, str) else list(attention_path)

    @classmethod
    def from_whisper_config(
        cls, config: WhisperConfig, low_rank_config: list[dict[str, int]] | None = None
    ) -> "LiteWhisperConfig":
        """The LiteWhisper configuration of a Whisper ``config`` with the given ranks."""
        values = config.to_dict()
        for key in ("model_type", "architectures", "auto_map", "custom_pipelines", "transformers_version",
                    "low_rank_config", "attention_path"):
            values.pop(key, None)
        values["architectures"] = ["LiteWhisperForConditionalGeneration"]
        lite = cls(low_rank_config=low_rank_config, **values)
        lite._attn_implementation = config._attn_implementation
        return lite

    def layer_attention_path(self, layer: int) -> str:
        """``auto``, ``full`` or ``rank_space``: how encoder layer ``layer`` computes self-attention."""
        path = getattr(self, "attention_path", "auto")
        return path if isinstance(path, str) else path[layer]

    def module_shape(self, module: str) -> tuple[int, int]:
        """``(in_features, out_features)`` of an encoder module."""
        return _module_shapes(self.d_model, self.encoder_ffn_dim)[module]

    def rank(self, layer: int, module: str) -> int | None:
        """Rank of ``module`` in encoder layer ``layer``, or ``None`` where it stays dense."""
        if not self.low_rank_config:
            return None
        return self.low_rank_config[layer].get(module)


def _module_shapes(d_model: int, ffn_dim: int) -> dict[str, tuple[int, int]]:
    shapes = {name: (d_model, d_model) for name in ("q_proj", "k_proj", "v_proj", "out_proj")}
    shapes["fc1"] = (d_model, ffn_dim)
    shapes["fc2"] = (ffn_dim, d_model)
    return shapes


def validate_low_rank_config(
    low_rank_config: list[dict[str, int]], encoder_layers: int, d_model: int, ffn_dim: int
) -> None:
    """Raise ``ValueError`` naming the layer, module and value of the first bad entry."""
    if not isinstance(low_rank_config, list):
        raise ValueError(f"low_rank_config must be a list with one dict per encoder layer, got {type(low_rank_config).__name__}.")
    if not low_rank_config:
        return
    if len(low_rank_config) != encoder_layers:
        raise ValueError(
            f"low_rank_config has {len(low_rank_config)} entries but the encoder has {encoder_layers} layers: "
            "give one dict per encoder layer (an empty dict keeps that layer dense)."
        )
    shapes = _module_shapes(d_model, ffn_dim)
    for layer, ranks in enumerate(low_rank_config):
        if not isinstance(ranks, dict):
            raise ValueError(f"low_rank_config[{layer}] must be a dict of module name -> rank, got {ranks!r}.")
        for module, rank in ranks.items():
            if module not in shapes:
                raise ValueError(
                    f"low_rank_config[{layer}] names unknown module {module!r} (rank {rank!r}); "
                    f"known modules: {', '.join(LOW_RANK_MODULES)}."
                )
            if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
                raise ValueError(
                    f"low_rank_config[{layer}][{module!r}] = {rank!r}: a rank must be a positive integer."
                )
            limit = min(shapes[module])
            if rank >= limit:
                raise ValueError(
                    f"low_rank_config[{layer}][{module!r}] = {rank}: the rank must be smaller than the layer's "
                    f"smaller side ({limit}); remove the entry to keep the module dense."
                )


def validate_attention_path(
    attention_path: str | list[str], low_rank_config: list[dict[str, int]], encoder_layers: int
) -> None:
    """Raise ``ValueError`` naming the layer and value of a bad ``attention_path`` entry."""
    if isinstance(attention_path, str):
        paths = [attention_path] * encoder_layers
        where = "attention_path"
    elif isinstance(attention_path, list):
        if len(attention_path) != encoder_layers:
            raise ValueError(
                f"attention_path has {len(attention_path)} entries but the encoder has {encoder_layers} layers: "
                "give one string for all layers or one per layer."
            )
        paths = attention_path
        where = None
    else:
        raise ValueError(f"attention_path must be a string or a list of strings, got {attention_path!r}.")
    for layer, path in enumerate(paths):
        name = where or f"attention_path[{layer}]"
        if path not in ATTENTION_PATHS:
            raise ValueError(f"{name} = {path!r}: choose one of {', '.join(ATTENTION_PATHS)}.")
        if path == "rank_space":
            ranks = low_rank_config[layer] if low_rank_config else {}
            missing = [m for m in ("k_proj", "v_proj") if m not in ranks]
            if missing:
                raise ValueError(
                    f"{name} = 'rank_space' but encoder layer {layer} has dense {' and '.join(missing)}: rank-space "
                    "attention needs low-rank k_proj and v_proj. Use 'auto' or 'full' for that layer."
                )
