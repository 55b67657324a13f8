"""CUDA-only checks: half-precision inference, the fused Triton kernel inside the model against PyTorch's
rank-space path and Whisper's own attention, torch.compile, and compression and healing on the GPU.
``scripts/gpu_check.py`` runs this file on a GPU machine; without CUDA every test here is skipped (the CPU paths are
tested elsewhere)."""

from __future__ import annotations

import pytest
import torch

from liteasr_hf import LiteWhisperConfig, LiteWhisperForConditionalGeneration

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

HALF = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]
# Whisper-base's width and heads at Whisper's 1500 positions: the shapes the kernel is tuned for.
BASE = dict(d_model=512, encoder_layers=2, decoder_layers=2, encoder_attention_heads=8, decoder_attention_heads=8,
            encoder_ffn_dim=2048, decoder_ffn_dim=2048, vocab_size=512, num_mel_bins=80, max_source_positions=1500,
            max_target_positions=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3,
            begin_suppress_tokens=None)
# Attention ranks small enough that `auto` takes the rank-space path (and on CUDA in half precision, the kernel).
RANKS = [{"q_proj": 48, "k_proj": 32, "v_proj": 40, "fc1": 256}, {"q_proj": 64, "k_proj": 48, "v_proj": 48}]


def model(dtype: torch.dtype, **overrides) -> LiteWhisperForConditionalGeneration:
    torch.manual_seed(0)
    config = LiteWhisperConfig(low_rank_config=RANKS, **{**BASE, **overrides})
    return LiteWhisperForConditionalGeneration(config).to("cuda", dtype).eval()


def features(dtype: torch.dtype, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 80, 3000, generator=torch.Generator().manual_seed(1)).to("cuda", dtype)


def encode(m: LiteWhisperForConditionalGeneration, feats: torch.Tensor, fused: bool | None = None) -> torch.Tensor:
    if fused is not None:
        for layer in m.get_encoder().layers:
            layer.self_attn.use_fused_kernel = fused
    with torch.inference_mode():
        return m.get_encoder()(feats).last_hidden_state.float()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_encoder_matches_float32(dtype):
    reference = encode(model(torch.float32), features(torch.float32))
    assert relative_error(encode(model(dtype), features(dtype)), reference) < 3e-2


@pytest.mark.parametrize("dtype", HALF)
def test_the_kernel_runs_inside_the_model_and_matches_both_pytorch_paths(dtype):
    m = model(dtype)
    assert m.get_encoder().attention_paths() == ["rank_space", "rank_space"]
    feats = features(dtype)
    fused, unfused = encode(m, feats, fused=True), encode(m, feats, fused=False)
    full = encode(model(dtype, attention_path="full"), feats)
    assert relative_error(fused, unfused) < 2e-2 and relative_error(fused, full) < 2e-2
    assert relative_error(unfused, full) < 2e-2


@pytest.mark.parametrize("dtype", HALF)
def test_the_kernel_takes_a_key_padding_mask_in_the_model(dtype):
    m = model(dtype)
    attention = m.get_encoder().layers[0].self_attn
    hidden = torch.randn(2, 1500, 512, generator=torch.Generator().manual_seed(2)).to("cuda", dtype)
    mask = torch.ones(2, 1, 1500, 1500, dtype=torch.bool, device="cuda")
    mask[1, ..., 1100:] = False  # the second item's last 400 positions are padding
    outputs = {}
    for fused in (True, False):
        attention.use_fused_kernel = fused
        with torch.inference_mode():
            outputs[fused] = attention(hidden, attention_mask=mask)[0].float()
    assert relative_error(outputs[True], outputs[False]) < 2e-2


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_generate_agrees_with_float32(dtype):
    feats32 = features(torch.float32, batch=1)
    with torch.inference_mode():
        reference = model(torch.float32)(input_features=feats32, decoder_input_ids=torch.tensor([[3, 5, 7]],
                                         device="cuda")).logits.float()
        half = model(dtype)
        logits = half(input_features=feats32.to(dtype), decoder_input_ids=torch.tensor([[3, 5, 7]],
                      device="cuda")).logits.float()
        tokens = half.generate(feats32.to(dtype), max_new_tokens=8, do_sample=False)
    cosine = torch.nn.functional.cosine_similarity(logits.flatten(), reference.flatten(), dim=0).item()
    assert cosine > 0.995
    assert tokens.shape[0] == 1 and 1 < tokens.shape[1] <= 1 + 8 + 4 and int(tokens.max()) < BASE["vocab_size"]


def test_compiled_encoder_on_cuda_matches_eager():
    m = model(torch.float16)
    feats = features(torch.float16)
    eager = encode(m, feats)
    encoder = m.get_encoder()
    encoder.compile()
    compiled = encode(m, feats)
    assert relative_error(compiled, eager) < 1e-2


def test_compression_and_healing_run_on_the_gpu():
    # Statistics and eigendecompositions in float64 on the device, then healing under bf16 autocast: the same ranks as
    # on the CPU, an encoder that computes what the CPU's does, and a held-out loss that healing lowers.
    import copy

    import numpy as np
    from test_modeling import TINY
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from liteasr_hf.compression.compressor import CompressionSettings, compress
    from liteasr_hf.compression.healing import HealSettings, heal

    torch.manual_seed(0)
    teacher = WhisperForConditionalGeneration(WhisperConfig(**TINY)).eval()
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(16000 * 20).astype(np.float32) * 0.1 for _ in range(10)]
    settings = CompressionSettings(thresholds={"attention": 0.5, "mlp": 0.5}, num_samples=10, batch_size=2)
    on_cpu = compress(copy.deepcopy(teacher), clips, WhisperFeatureExtractor(), settings, progress=False)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # cuDNN convolutions would round to 10 bits where the CPU keeps 23
    try:
        on_gpu = compress(copy.deepcopy(teacher).to("cuda"), clips, WhisperFeatureExtractor(), settings,
                          progress=False)
        assert on_gpu.plan.ranks == on_cpu.plan.ranks and any(on_gpu.plan.ranks)
        assert all(p.device.type == "cuda" for p in on_gpu.model.parameters())
        # Directions come out with either sign and, in a flat spectrum, mixed within near-equal eigenvalues:
        # compare what the encoders compute, not their factors.
        feats = WhisperFeatureExtractor()(clips[:2], sampling_rate=16000, return_tensors="pt").input_features
        with torch.inference_mode():
            expected = on_cpu.model.get_encoder()(feats).last_hidden_state
            got = on_gpu.model.get_encoder()(feats.to("cuda")).last_hidden_state.cpu()
        assert relative_error(got, expected) < 1e-3
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    report = heal(on_gpu.model, teacher.to("cuda"), clips, WhisperFeatureExtractor(),
                  HealSettings(block_steps=6, steps=6, lr=1e-3, batch_size=2, eval_every=2, num_samples=10,
                               holdout=0.2), progress=False)
    assert any(s.holdout_loss_after < s.holdout_loss_before for s in report.stages)
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in on_gpu.model.parameters())
