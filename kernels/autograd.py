"""TileLang kernels as `torch.autograd.Function`s, so that they drop into a PyTorch model.

`flash_attention(q, k, v, causal)` takes BSHD tensors (q [b, s_q, h, d], k and v [b, s_k, h_kv, d])
and differentiates through kernels/flash_attention_bwd.py: the forward saves q, k, v, o and the
rows' LSE; the backward runs the TileLang preprocess and dK/dV/dQ kernels.

`sparse_mla(q, kv, indices)` (DeepSeek-V3.2's sparse attention, kernels/sparse_mla.py) differentiates
through kernels/sparse_mla_bwd.py: gradients for q and for the kv rows the indices select.
"""
from __future__ import annotations

import torch

from kernels import flash_attention_bwd as fab


class FlashAttention(torch.autograd.Function):
    """o = softmax(q k^T / sqrt(d)) v per head (bottom-right causal mask when `causal`)."""

    @staticmethod
    def forward(ctx, q, k, v, causal: bool = False):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # saved once, as the kernels take them
        o, lse = fab.forward(q, k, v, causal)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal = causal
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = fab.backward(q, k, v, o, lse, do, ctx.causal)
        return dq, dk, dv, None


def flash_attention(q, k, v, causal: bool = False):
    """Differentiable TileLang FlashAttention (BSHD in and out)."""
    return FlashAttention.apply(q, k, v, causal)


class SparseMLA(torch.autograd.Function):
    """out = softmax(scale q kv[idx]^T) kv[idx, :d_v] per query and head (kernels/sparse_mla.py)."""

    @staticmethod
    def forward(ctx, q, kv, indices, sm_scale=None, dim_v: int = 512):
        from kernels.sparse_mla import sparse_mla as forward

        q, kv, indices = q.contiguous(), kv.contiguous(), indices.contiguous()
        out, lse = forward(q, kv, indices, sm_scale, dim_v)
        ctx.save_for_backward(q, kv, indices, out, lse)
        ctx.sm_scale = sm_scale
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, d_out, _d_lse):
        from kernels.sparse_mla_bwd import sparse_mla_backward

        q, kv, indices, out, lse = ctx.saved_tensors
        dq, dkv = sparse_mla_backward(q, kv, indices, out, lse, d_out, ctx.sm_scale)
        return dq, dkv.to(kv.dtype), None, None, None


def sparse_mla(q, kv, indices, sm_scale=None, dim_v: int = 512):
    """Differentiable TileLang sparse MLA: (out [t, heads, dim_v], lse [t, heads]); lse carries no gradient."""
    return SparseMLA.apply(q, kv, indices, sm_scale, dim_v)
