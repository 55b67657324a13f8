"""The fused rank-space attention kernel against a float64 PyTorch reference, its input checks and its Hub import.

Without a CUDA device the kernel runs in Triton's interpreter (TRITON_INTERPRET=1: numpy on CPU tensors), for
fp32 and fp16 only: the interpreter's tl.dot multiplies bf16 bit patterns as integers (triton 3.9), so bf16 and
the timing test need a GPU. Triton is a test-only dependency here, e.g.
`PYTHONPATH=/path/to/triton-target python -m pytest tests/test_rank_attention_triton.py`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F

ON_CUDA = torch.cuda.is_available()
if not ON_CUDA and "triton" not in sys.modules:
    # Without a GPU the kernel runs in Triton's interpreter, which must be chosen before triton's first import
    # (its tl.* helpers are jit functions too); liteasr_hf imports it through transformers and torch._dynamo.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from liteasr_hf.models.lite_whisper import rank_attention_triton  # noqa: E402

DEVICE = "cuda" if ON_CUDA else "cpu"
# Tolerances against float64 math on the same (rounded) inputs.
TOLERANCES = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 2e-2}


@pytest.fixture(scope="module")
def kernel() -> ModuleType:
    """The kernel module, for the tests that launch it: they need triton, and a GPU or the interpreter."""
    pytest.importorskip("triton")
    if not ON_CUDA and not rank_attention_triton._interpreted():
        pytest.skip("no CUDA, and triton was imported before TRITON_INTERPRET=1 was set: run this file alone")
    return rank_attention_triton


def reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, scale: float = 1.0
) -> torch.Tensor:
    """float64 softmax(scale * q k^T) v with k, v shared by the heads: [B, T, H, RV]; all-masked rows give 0."""
    scores = torch.einsum("bhtr,bsr->bhts", q.double(), k.double()) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return torch.einsum("bhts,bsr->bthr", probs, v.double())


def make_inputs(
    batch: int, heads: int, seq_len: int, rank_k: int, rank_v: int, dtype: torch.dtype, strided: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q [B, H, T, RK] (scaled like real queries), k [B, T, RK], v [B, T, RV]; `strided` gives none of them
    contiguous: q is a transposed [B, T, H, RK], k a slice of a wider tensor, v a transposed [B, RV, T]."""
    if strided:
        q = torch.randn(batch, seq_len, heads, rank_k, device=DEVICE).transpose(1, 2)
        k = torch.randn(batch, seq_len, rank_k + 16, device=DEVICE)[..., 8 : 8 + rank_k]
        v = torch.randn(batch, rank_v, seq_len, device=DEVICE).transpose(1, 2)
        assert not (k.is_contiguous() or v.is_contiguous()) and (heads == 1 or not q.is_contiguous())
    else:
        q = torch.randn(batch, heads, seq_len, rank_k, device=DEVICE)
        k = torch.randn(batch, seq_len, rank_k, device=DEVICE)
        v = torch.randn(batch, seq_len, rank_v, device=DEVICE)
    return (q * rank_k**-0.5).to(dtype), k.to(dtype), v.to(dtype)


def padding_mask(batch: int, seq_len: int) -> torch.Tensor:
    """[B, T] bool, True for the first `length` keys, with a different length for each batch item."""
    lengths = torch.tensor([seq_len - (i * seq_len) // (batch + 1) for i in range(batch)], device=DEVICE)
    return torch.arange(seq_len, device=DEVICE)[None, :] < lengths[:, None]


DTYPES = [
    torch.float32,
    torch.float16,
    pytest.param(
        torch.bfloat16,
        marks=pytest.mark.skipif(not ON_CUDA, reason="the Triton interpreter's tl.dot does not handle bf16"),
    ),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "batch, heads, seq_len, rank_k, rank_v",
    [(1, 2, 7, 16, 16), (2, 3, 37, 32, 48), (2, 2, 130, 64, 16), (1, 2, 20, 256, 32), (2, 1, 9, 16, 256)],
)
@pytest.mark.parametrize("masked, strided, scale", [(False, False, 1.0), (True, True, 0.7)], ids=["plain", "masked"])
def test_matches_reference(
    kernel: ModuleType,
    batch: int,
    heads: int,
    seq_len: int,
    rank_k: int,
    rank_v: int,
    dtype: torch.dtype,
    masked: bool,
    strided: bool,
    scale: float,
) -> None:
    torch.manual_seed(0)
    q, k, v = make_inputs(batch, heads, seq_len, rank_k, rank_v, dtype, strided)
    mask = padding_mask(batch, seq_len) if masked else None
    out = kernel.rank_space_attention(q, k, v, key_padding_mask=mask, scale=scale)
    assert out.shape == (batch, seq_len, heads, rank_v) and out.dtype == dtype and out.is_contiguous()
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(out.double(), reference(q, k, v, mask, scale), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_ranks_that_are_not_powers_of_two(kernel: ModuleType, dtype: torch.dtype) -> None:
    """Ranks are zero-padded to a power of two >= 16 inside the kernel, so any rank up to 256 works."""
    torch.manual_seed(0)
    q, k, v = make_inputs(2, 2, 19, 20, 7, dtype, strided=True)
    mask = padding_mask(2, 19)
    out = kernel.rank_space_attention(q, k, v, key_padding_mask=mask)
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(out.double(), reference(q, k, v, mask), rtol=tol, atol=tol)


def test_whisper_length(kernel: ModuleType) -> None:
    """T = 1500, Whisper's encoder length: many query and key blocks, the last ones partial (a few seconds on CPU)."""
    torch.manual_seed(0)
    q, k, v = make_inputs(1, 1, 1500, 32, 32, torch.float16, strided=True)
    mask = torch.arange(1500, device=DEVICE)[None, :] < 1234
    out = kernel.rank_space_attention(q, k, v, key_padding_mask=mask)
    torch.testing.assert_close(out.double(), reference(q, k, v, mask), rtol=2e-3, atol=2e-3)


def test_fully_masked_rows_are_zero_and_padding_never_leaks(kernel: ModuleType) -> None:
    torch.manual_seed(0)
    q, k, v = make_inputs(2, 2, 40, 16, 32, torch.float16, strided=False)
    mask = torch.ones(2, 40, dtype=torch.bool, device=DEVICE)
    mask[0] = False  # batch item 0 has no key at all
    mask[1, 25:] = False
    k[1, 25:] = float("inf")  # whatever sits in padded positions must not reach the output
    v[1, 25:] = float("nan")
    out = kernel.rank_space_attention(q, k, v, key_padding_mask=mask)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    assert torch.isfinite(out).all()
    k[1, 25:], v[1, 25:] = 0.0, 0.0
    torch.testing.assert_close(out.double(), reference(q, k, v, mask), rtol=2e-3, atol=2e-3)


def test_output_views_as_concatenated_heads(kernel: ModuleType) -> None:
    """[B, T, H, RV] contiguous, so the caller's reshape to [B, T, H * RV] is a view."""
    q, k, v = make_inputs(1, 3, 5, 16, 16, torch.float32, strided=False)
    out = kernel.rank_space_attention(q, k, v)
    assert out.view(1, 5, 48).data_ptr() == out.data_ptr()
    empty = kernel.rank_space_attention(q[:0], k[:0], v[:0])
    assert empty.shape == (0, 5, 3, 16)


BOOL_MASK = torch.ones(1, 7, dtype=torch.bool)
BAD_INPUTS = [  # q, k and v shapes, dtype, key_padding_mask, expected message
    pytest.param((2, 7, 16), (2, 7, 16), (2, 7, 16), torch.float16, None, "expects q", id="3-d q"),
    pytest.param((2, 2, 7, 16), (2, 7, 32), (2, 7, 16), torch.float16, None, "k must have shape", id="k rank"),
    pytest.param((2, 2, 7, 16), (2, 7, 16), (2, 8, 16), torch.float16, None, "v must have shape", id="v length"),
    pytest.param((1, 1, 7, 512), (1, 7, 512), (1, 7, 16), torch.float16, None, "RK", id="RK above 256"),
    pytest.param((1, 1, 7, 16), (1, 7, 16), (1, 7, 272), torch.float16, None, "PyTorch path", id="RV above 256"),
    pytest.param((1, 1, 7, 16), (1, 7, 16), (1, 7, 16), torch.float64, None, "one dtype", id="float64"),
    pytest.param((1, 1, 7, 16), (1, 7, 16), (1, 7, 16), torch.float16, BOOL_MASK.float(), "bool", id="float mask"),
    pytest.param((1, 1, 7, 16), (1, 7, 16), (1, 7, 16), torch.float16, BOOL_MASK[:, :6], "(B, T)", id="mask shape"),
]


@pytest.mark.parametrize("q_shape, k_shape, v_shape, dtype, mask, message", BAD_INPUTS)
def test_bad_inputs_raise_value_error(
    q_shape: tuple[int, ...],
    k_shape: tuple[int, ...],
    v_shape: tuple[int, ...],
    dtype: torch.dtype,
    mask: torch.Tensor | None,
    message: str,
) -> None:
    """Checked before triton is needed, so these run without it."""
    q, k, v = (torch.zeros(shape, dtype=dtype) for shape in (q_shape, k_shape, v_shape))
    with pytest.raises(ValueError, match=re.escape(message)):
        rank_attention_triton.rank_space_attention(q, k, v, key_padding_mask=mask)


def test_mixed_dtypes_and_cpu_tensors_raise_value_error(monkeypatch: pytest.MonkeyPatch) -> None:
    q, k, v = torch.zeros(1, 1, 7, 16), torch.zeros(1, 7, 16, dtype=torch.float16), torch.zeros(1, 7, 16)
    with pytest.raises(ValueError, match="one dtype"):
        rank_attention_triton.rank_space_attention(q, k, v)
    monkeypatch.setattr(rank_attention_triton, "_interpreted", lambda: False)
    with pytest.raises(ValueError, match="CUDA tensors"):
        rank_attention_triton.rank_space_attention(q, k.float(), v)
    assert not rank_attention_triton.is_available("cpu")


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "padded"])
def test_lite_whisper_attention_through_the_kernel_equals_the_full_path(
    kernel: ModuleType, monkeypatch: pytest.MonkeyPatch, masked: bool
) -> None:
    """The model's fused branch (unpadded folding, kernel layout, key padding taken from a 4-D mask) against
    Whisper's own attention. On CPU the branch is opened for fp32 so that the interpreter can run it."""
    from liteasr_hf import LiteWhisperConfig
    from liteasr_hf.models.lite_whisper import modeling_lite_whisper as modeling

    if not ON_CUDA:
        monkeypatch.setattr(modeling, "_fused_kernel_possible", lambda device, dtype, *modules: True)
    dtype = torch.float16 if ON_CUDA else torch.float32
    config = LiteWhisperConfig(d_model=64, encoder_attention_heads=4, encoder_layers=1, max_source_positions=40,
                               low_rank_config=[{"q_proj": 24, "k_proj": 8, "v_proj": 12}])
    torch.manual_seed(0)
    attention = modeling.LiteWhisperAttention(config, 0).eval()
    with torch.no_grad():
        for p in attention.parameters():
            p.normal_(0.0, 0.3)
    attention = attention.to(DEVICE, dtype)
    hidden = torch.randn(2, 40, 64, device=DEVICE, dtype=dtype)
    mask = None
    if masked:  # additive (B, 1, T, T) mask hiding the second item's last 15 keys, as transformers builds it
        mask = torch.zeros(2, 1, 40, 40, device=DEVICE, dtype=dtype)
        mask[1, :, :, 25:] = torch.finfo(dtype).min
    calls = []
    real = kernel.rank_space_attention
    monkeypatch.setattr(kernel, "rank_space_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        config.attention_path = "rank_space"
        fused = attention(hidden, attention_mask=mask)[0]
        config.attention_path = "full"
        full = attention(hidden, attention_mask=mask)[0]
    assert calls, "the kernel was not used"
    error = ((fused.double() - full.double()).norm() / full.double().norm()).item()
    assert error < TOLERANCES[dtype] * 10, error


def test_hub_import_check_passes_without_triton() -> None:
    """transformers' remote-code loader runs check_imports on every file the modeling file imports relatively."""
    script = textwrap.dedent(
        """
        import importlib.util, sys

        class NoTriton:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "triton":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)

        sys.meta_path.insert(0, NoTriton())
        try:
            import triton
            sys.exit("the blocker let triton through")
        except ModuleNotFoundError:
            pass

        from transformers.dynamic_module_utils import check_imports, get_imports

        path = sys.argv[1]
        assert set(get_imports(path)) <= {"contextlib", "torch"}, get_imports(path)
        assert check_imports(path) == []  # raises ImportError on a missing package; no relative imports
        # Loaded the way the remote-code loader loads it: a standalone module, not part of liteasr_hf.
        spec = importlib.util.spec_from_file_location("rank_attention_triton", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.triton is None and not module.is_available("cuda")
        print("ok")
        """
    )
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-c", script, rank_attention_triton.__file__], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.skipif(not ON_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("heads", [8, 20])
def test_whisper_sized_kernel_is_correct_and_timed(kernel: ModuleType, heads: int) -> None:
    """B=16, T=1500 (Whisper's encoder), RK=RV=32, fp16: the kernel against PyTorch SDPA (GQA, one kv head). The
    kernel's scale defaults to 1 (the model folds the attention scaling into q), SDPA's to 1/sqrt(RK): both say 1."""
    torch.manual_seed(0)
    batch, seq_len, rank = 16, 1500, 32
    q, k, v = make_inputs(batch, heads, seq_len, rank, rank, torch.float16, strided=False)

    def sdpa() -> torch.Tensor:  # [B, T, H * R], as the attention layer needs it
        out = F.scaled_dot_product_attention(q, k[:, None], v[:, None], scale=1.0, enable_gqa=True)
        return out.transpose(1, 2).reshape(batch, seq_len, heads * rank)

    def fused() -> torch.Tensor:
        return kernel.rank_space_attention(q, k, v).view(batch, seq_len, heads * rank)

    q32, k32, v32 = q.float(), k[:, None].float(), v[:, None].float()
    expected = F.scaled_dot_product_attention(q32, k32, v32, scale=1.0, enable_gqa=True).transpose(1, 2).flatten(2)
    torch.testing.assert_close(fused().float(), expected, rtol=2e-3, atol=2e-3)

    timings = ", ".join(f"{name} {benchmark_ms(fn):.3f} ms" for name, fn in (("triton", fused), ("sdpa", sdpa)))
    print(f"\nB={batch} H={heads} T={seq_len} RK=RV={rank} fp16: {timings}")


def benchmark_ms(fn: Callable[[], torch.Tensor], warmup: int = 5, repeats: int = 20) -> float:
    """Median milliseconds per call on the current CUDA stream, after warm-up (compilation, autotuning)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]
