"""Fused Triton kernel for encoder self-attention computed in the rank space of low-rank projections.

Once the low-rank factors are folded, each head's queries attend to one key tensor and one value tensor
shared by all heads of a batch item (like multi-query attention):

    out[b, :, h, :] = softmax(scale * q[b, h] @ k[b]^T, keys where key_padding_mask[b] is False removed) @ v[b]

The kernel is flash-attention style: one program takes BLOCK_M queries of one (batch, head), walks the keys
in blocks of BLOCK_N with an online softmax, and never writes the T x T scores to memory.

This file is imported relatively (and lazily, on CUDA only) by `modeling_lite_whisper.py`, so it is
uploaded to the Hub with it. transformers' remote-code loader (`dynamic_module_utils.check_imports`)
requires every module imported in it, but skips imports inside `try` blocks: triton is imported in one,
so CPU users without triton can still load the model. Import nothing else here but torch and the stdlib.
"""

import contextlib

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU users load the model without triton; the kernel is then simply not defined.
    triton = None

MAX_RANK = 256  # Beyond this the fp32 accumulator no longer fits in registers; the PyTorch path handles it.
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


if triton is not None:

    @triton.jit
    def _rank_attention_fwd(
        q_ptr,
        k_ptr,
        v_ptr,
        mask_ptr,
        out_ptr,
        stride_qb,
        stride_qh,
        stride_qt,
        stride_qr,
        stride_kb,
        stride_kt,
        stride_kr,
        stride_vb,
        stride_vt,
        stride_vr,
        stride_mb,
        stride_mt,
        stride_ob,
        stride_ot,
        stride_oh,
        stride_or,
        num_heads,
        seq_len,
        rank_k,
        rank_v,
        qk_scale_log2,
        HAS_MASK: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_RK: tl.constexpr,
        BLOCK_RV: tl.constexpr,
        DOT_PRECISION: tl.constexpr,
    ):
        """Grid (B * H, cdiv(T, BLOCK_M)). Ranks are padded to the power-of-two BLOCK_RK / BLOCK_RV with zeros."""
        # Heads of one batch item are neighbours in the grid: they read the same keys and values (L2 reuse).
        pid_bh = tl.program_id(0)
        pid_m = tl.program_id(1)
        # int64: batch offsets of large tensors overflow int32.
        b = (pid_bh // num_heads).to(tl.int64)
        h = (pid_bh % num_heads).to(tl.int64)

        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_rk = tl.arange(0, BLOCK_RK)
        offs_rv = tl.arange(0, BLOCK_RV)
        m_in = offs_m < seq_len
        rk_in = offs_rk < rank_k
        rv_in = offs_rv < rank_v

        q_ptrs = q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_rk[None, :] * stride_qr
        q = tl.load(q_ptrs, mask=m_in[:, None] & rk_in[None, :], other=0.0)  # [BLOCK_M, BLOCK_RK]
        kt_ptrs = k_ptr + b * stride_kb + offs_rk[:, None] * stride_kr + offs_n[None, :] * stride_kt
        v_ptrs = v_ptr + b * stride_vb + offs_n[:, None] * stride_vt + offs_rv[None, :] * stride_vr

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max of the log2-scaled scores
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running softmax denominator
        acc = tl.zeros([BLOCK_M, BLOCK_RV], dtype=tl.float32)

        for start_n in range(0, seq_len, BLOCK_N):
            n_ok = (start_n + offs_n) < seq_len
            if HAS_MASK:
                keep = tl.load(mask_ptr + b * stride_mb + (start_n + offs_n) * stride_mt, mask=n_ok, other=0)
                n_ok = n_ok & (keep != 0)
            # Padded keys and values load as zeros, so whatever the caller left there (even NaN) never leaks.
            kt = tl.load(kt_ptrs + start_n * stride_kt, mask=rk_in[:, None] & n_ok[None, :], other=0.0)
            v = tl.load(v_ptrs + start_n * stride_vt, mask=n_ok[:, None] & rv_in[None, :], other=0.0)

            s = tl.dot(q, kt, input_precision=DOT_PRECISION) * qk_scale_log2  # [BLOCK_M, BLOCK_N], fp32
            s = tl.where(n_ok[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            # While every key seen so far is masked the max is -inf; subtract 0 instead, so exp2 gives 0, not NaN.
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp2(s - m_safe[:, None])
            alpha = tl.exp2(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
            m_i = m_new

        # A row whose keys are all masked has l_i == 0 and acc == 0: it comes out as zeros.
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        out_ptrs = out_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_rv[None, :] * stride_or
        tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=m_in[:, None] & rv_in[None, :])


def _interpreted() -> bool:
    """Whether the kernel was defined under TRITON_INTERPRET=1 (runs on CPU tensors through numpy)."""
    return triton is not None and not isinstance(_rank_attention_fwd, triton.JITFunction)


def is_available(device: torch.device | str) -> bool:
    """Whether `rank_space_attention` can run on `device`: a CUDA device with triton importable.

    Under TRITON_INTERPRET=1 (set before triton is first imported; for tests) any device is accepted.
    """
    if triton is None:
        return False
    if _interpreted():
        return True
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


def _launch_config(block_rk: int, block_rv: int, seq_len: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for an H100-class GPU.

    Wide ranks get smaller tiles: the fp32 accumulator takes BLOCK_M x BLOCK_RV registers and each pipeline
    stage BLOCK_N x (BLOCK_RK + BLOCK_RV) elements of shared memory. These tiles compile for sm_90 without
    register spills (ptxas resource usage, triton 3.9).
    """
    widest = max(block_rk, block_rv)
    if dtype == torch.float32:  # exact dot products run on CUDA cores: smaller tiles
        config = (64, 32, 8, 2) if widest <= 64 else (32, 32, 8, 2) if widest <= 128 else (32, 16, 8, 1)
    else:
        config = (128, 64, 8, 3) if widest <= 64 else (128, 32, 8, 3) if widest <= 128 else (32, 32, 8, 2)
    block_m, block_n, num_warps, num_stages = config
    # Short sequences: no bigger tiles than needed (tl.dot needs every dimension >= 16).
    cap = max(16, triton.next_power_of_2(seq_len))
    return min(block_m, cap), min(block_n, cap), num_warps, num_stages


def _check_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None
) -> None:
    """Raise a ValueError naming the offending argument for anything the kernel cannot take."""
    if q.dim() != 4 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(
            "rank_space_attention expects q [B, H, T, RK], k [B, T, RK] and v [B, T, RV]; "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    batch, _, seq_len, rank_k = q.shape
    if k.shape != (batch, seq_len, rank_k):
        raise ValueError(f"k must have shape (B, T, RK) = {(batch, seq_len, rank_k)} to match q; got {tuple(k.shape)}")
    if v.shape[:2] != (batch, seq_len):
        raise ValueError(f"v must have shape (B, T, RV) with (B, T) = {(batch, seq_len)}; got {tuple(v.shape)}")
    for name, rank in (("RK (q.shape[-1])", rank_k), ("RV (v.shape[-1])", v.shape[-1])):
        if not 1 <= rank <= MAX_RANK:
            raise ValueError(f"{name} = {rank} is outside the kernel's 1..{MAX_RANK}; use the PyTorch path")
    if q.dtype not in _DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k and v must share one dtype among {_DTYPES}; got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"q, k and v must be on one device; got {q.device}, {k.device}, {v.device}")
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool or key_padding_mask.shape != (batch, seq_len):
            raise ValueError(
                f"key_padding_mask must be a bool tensor of shape (B, T) = {(batch, seq_len)} (True = attend); "
                f"got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
            )
        if key_padding_mask.device != q.device:
            raise ValueError(f"key_padding_mask is on {key_padding_mask.device}, q on {q.device}")
    if q.device.type != "cuda" and not _interpreted():
        raise ValueError(f"the Triton kernel runs on CUDA tensors; got {q.device}. Use the PyTorch path on CPU")


def rank_space_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """Multi-query attention in rank space, fused: `out[b, :, h] = softmax(scale * q[b, h] @ k[b]^T) @ v[b]`.

    Args:
        q: [B, H, T, RK] queries (attention scaling usually already folded in), any strides.
        k: [B, T, RK] keys shared by all heads, any strides.
        v: [B, T, RV] values shared by all heads, any strides. RK and RV are each in 1..256 and may differ
            (zero-padded to a power of two >= 16 inside the kernel: 16, 32, 64, 128, 256 waste nothing).
        key_padding_mask: optional bool [B, T], True where the key is attended. A query whose keys are all
            masked gets zeros (not NaN, and not the uniform average a large negative bias would give).
        scale: extra multiplier on the scores.

    Returns:
        [B, T, H, RV] in the dtype of q, contiguous, so `.view(B, T, H * RV)` needs no copy. fp16 and bf16
        are accumulated in fp32; fp32 inputs use full-precision (not TF32) dot products.
    """
    _check_inputs(q, k, v, key_padding_mask)
    if triton is None:
        raise ImportError("rank_space_attention needs triton (`pip install triton`); use the PyTorch path without it")
    batch, num_heads, seq_len, rank_k = q.shape
    rank_v = v.shape[-1]
    out = torch.empty(batch, seq_len, num_heads, rank_v, dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out

    block_rk = max(16, triton.next_power_of_2(rank_k))
    block_rv = max(16, triton.next_power_of_2(rank_v))
    block_m, block_n, num_warps, num_stages = _launch_config(block_rk, block_rv, seq_len, q.dtype)
    if key_padding_mask is None:
        mask, mask_strides = q, (0, 0)  # never read: HAS_MASK=False compiles the loads away
    else:
        mask = key_padding_mask.view(torch.uint8)  # same storage and strides; triton loads bytes more portably
        mask_strides = mask.stride()
    # Launch on q's GPU, not the current one.
    with torch.cuda.device(q.device) if q.device.type == "cuda" else contextlib.nullcontext():
        _rank_attention_fwd[(batch * num_heads, triton.cdiv(seq_len, block_m))](
            q,
            k,
            v,
            mask,
            out,
            *q.stride(),
            *k.stride(),
            *v.stride(),
            *mask_strides,
            *out.stride(),
            num_heads,
            seq_len,
            rank_k,
            rank_v,
            float(scale) * 1.4426950408889634,  # log2(e): the kernel uses exp2
            HAS_MASK=key_padding_mask is not None,
            BLOCK_M=block_m,
            BLOCK_N=block_n,
            BLOCK_RK=block_rk,
            BLOCK_RV=block_rv,
            DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",  # tf32 is ignored for fp16/bf16
            num_warps=num_warps,
            num_stages=num_stages,
        )
    return out

