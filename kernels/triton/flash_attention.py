"""FlashAttention forward in Triton, written here with the same contract as the TileLang kernel.

q [b, s_q, h, d], k/v [b, s_k, h_kv, d] (BSHD) -> o [b, s_q, h, d]; fp16/bf16; head dim
64/128/256; GQA (h % h_kv == 0); causal aligned bottom-right when s_q != s_k. Triton is
imported only when a call needs it (the jitted kernel lives in `_flash_attention_jit`).
"""
from __future__ import annotations

import math
from typing import Optional

LOG2E = 1.44269504088896340736


def prepare(q, k, v, causal: bool = False, *, knobs: Optional[dict] = None, out=None):
    """Validate, allocate the output and return a zero-argument callable computing it.

    knobs: {"BM", "BN", "num_warps", "num_stages"} to pin a schedule; None autotunes on the first
    call (so call it once before timing). out: an optional [b, s_q, h, d] buffer to write.
    """
    import torch

    from kernels.flash_attention import check_tensors
    from kernels.triton import _flash_attention_jit as jit

    batch, heads, kv_heads, seq_q, seq_k, dim, _ = check_tensors(q, k, v)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if out is not None and (out.shape != q.shape or out.dtype != q.dtype or not out.is_contiguous()):
        raise ValueError(f"flash_attention: out must be a contiguous {tuple(q.shape)} {q.dtype} tensor")
    o = torch.empty_like(q) if out is None else out
    args = (q, k, v, o, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
            heads, heads // kv_heads, seq_q, seq_k, LOG2E / math.sqrt(dim))
    if knobs is None:
        grid = lambda meta: (-(-seq_q // meta["BM"]), batch * heads)  # noqa: E731

        def run():
            jit.flash_fwd_tuned[grid](*args, D=dim, CAUSAL=causal)
            return o
    else:
        meta = dict(knobs)
        grid = (-(-seq_q // meta["BM"]), batch * heads)

        def run():
            jit.flash_fwd[grid](*args, D=dim, CAUSAL=causal, **meta)
            return o
    return run


def flash_attention(q, k, v, causal: bool = False, *, knobs: Optional[dict] = None):
    """o = softmax(q k^T / sqrt(d)) v per head (see the module docstring)."""
    return prepare(q, k, v, causal, knobs=knobs)()
