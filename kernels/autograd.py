"""TileLang kernels as `torch.autograd.Function`s, so that they drop into a PyTorch model.

`flash_attention(q, k, v, causal)` takes BSHD tensors (q [b, s_q, h, d], k and v [b, s_k, h_kv, d])
and differentiates through kernels/flash_attention_bwd.py: the forward saves q, k, v, o and the
rows' LSE; the backward runs the TileLang preprocess and dK/dV/dQ kernels.
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
