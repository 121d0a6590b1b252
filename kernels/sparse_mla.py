"""Sparse MLA forward (DeepSeek-V3.2 prefill): each query attends to its top-k kv positions.

q [t, heads, 576] (512 latent + 64 rope dims), one shared latent kv head kv [s, 1, 576] whose
first 512 dims double as V, indices [t, 1, topk] (-1 = no position). For every query:

    out[h]  = softmax_j(scale * q[h] . kv[idx_j]) @ kv[idx_j, :512]
    lse[h]  = log(sum_j exp(scale * q[h] . kv[idx_j]))         (natural log)

One CTA takes one query and `block_H` of its heads. The kv rows named by `block_I` indices at a time
are gathered into shared memory; the scores, an online softmax in base 2 and the P @ V product
follow as in FlashAttention. Invalid indices (< 0 or >= s) are masked, and a query with no valid
index yields out = 0 and lse = -inf.
"""

import functools
import math

import tilelang.language as T

from kernels._compile import compile_kernel

LOG2E = 1.4426950408889634
PASS_CONFIGS = {"tl.enable_fast_math": True}


def sparse_mla_fwd(heads: int = 128, dim: int = 512, tail: int = 64, topk: int = 2048,
                   sm_scale: float | None = None, block_H: int = 64, block_I: int = 64,
                   num_stages: int = 2, threads: int = 256):
    """Builder: Q bf16 [t, heads, dim+tail], KV bf16 [s, 1, dim+tail], Indices int32 [t, 1, topk]
    -> Out bf16 [t, heads, dim], Lse fp32 [t, heads] (both outputs)."""
    t, s = T.dynamic("t"), T.dynamic("s")
    scale = (sm_scale if sm_scale is not None else (dim + tail) ** -0.5) * LOG2E
    groups = heads // block_H
    bf16, f32 = "bfloat16", "float32"

    @T.prim_func
    def main(Q: T.Tensor([t, heads, dim + tail], bf16), KV: T.Tensor([s, 1, dim + tail], bf16),
             Indices: T.Tensor([t, 1, topk], T.int32), Out: T.Tensor([t, heads, dim], bf16),
             Lse: T.Tensor([t, heads], f32)):
        with T.Kernel(t * groups, threads=threads) as bx:
            q_i, h0 = bx // groups, (bx % groups) * block_H
            q_shared = T.alloc_shared([block_H, dim], bf16)
            q_tail = T.alloc_shared([block_H, tail], bf16)
            kv_shared = T.alloc_shared([block_I, dim], bf16)
            k_tail = T.alloc_shared([block_I, tail], bf16)
            p_shared = T.alloc_shared([block_H, block_I], bf16)
            valid = T.alloc_fragment([block_I], "bool")
            acc_s = T.alloc_fragment([block_H, block_I], f32)
            acc_o = T.alloc_fragment([block_H, dim], f32)
            m = T.alloc_fragment([block_H], f32)
            m_prev = T.alloc_fragment([block_H], f32)
            denom = T.alloc_fragment([block_H], f32)
            block_sum = T.alloc_fragment([block_H], f32)
            T.copy(Q[q_i, h0:h0 + block_H, :dim], q_shared)
            T.copy(Q[q_i, h0:h0 + block_H, dim:], q_tail)
            T.fill(acc_o, 0)
            T.fill(denom, 0)
            T.fill(m, -(2.0**30))  # finite, so fully masked blocks give exp2(-inf) = 0, never NaN
            for it in T.Pipelined(T.ceildiv(topk, block_I), num_stages=num_stages):
                for i in T.Parallel(block_I):
                    idx = Indices[q_i, 0, T.min(it * block_I + i, topk - 1)]
                    valid[i] = it * block_I + i < topk and idx >= 0 and idx < s
                for i, d in T.Parallel(block_I, dim):
                    kv_shared[i, d] = KV[T.max(T.min(Indices[q_i, 0, T.min(it * block_I + i, topk - 1)], s - 1), 0), 0, d]
                for i, d in T.Parallel(block_I, tail):
                    k_tail[i, d] = KV[T.max(T.min(Indices[q_i, 0, T.min(it * block_I + i, topk - 1)], s - 1), 0), 0, dim + d]
                for h, i in T.Parallel(block_H, block_I):
                    acc_s[h, i] = T.if_then_else(valid[i], 0, -T.infinity(f32))
                T.gemm(q_shared, kv_shared, acc_s, transpose_B=True, policy=T.GemmWarpPolicy.FullRow)
                T.gemm(q_tail, k_tail, acc_s, transpose_B=True, policy=T.GemmWarpPolicy.FullRow)
                T.copy(m, m_prev)
                T.reduce_max(acc_s, m, dim=1, clear=False)
                for h in T.Parallel(block_H):
                    m[h] = T.max(m[h], m_prev[h])
                for h, i in T.Parallel(block_H, block_I):
                    acc_s[h, i] = T.exp2((acc_s[h, i] - m[h]) * scale)
                T.reduce_sum(acc_s, block_sum, dim=1)
                for h in T.Parallel(block_H):
                    denom[h] = denom[h] * T.exp2((m_prev[h] - m[h]) * scale) + block_sum[h]
                for h, d in T.Parallel(block_H, dim):
                    acc_o[h, d] = acc_o[h, d] * T.exp2((m_prev[h] - m[h]) * scale)
                T.copy(acc_s, p_shared)
                T.gemm(p_shared, kv_shared, acc_o, policy=T.GemmWarpPolicy.FullRow)
            for h, d in T.Parallel(block_H, dim):
                acc_o[h, d] = T.if_then_else(denom[h] > 0, acc_o[h, d] / denom[h], 0)
            for h in T.Parallel(block_H):  # back from base 2 to the natural log
                block_sum[h] = T.if_then_else(denom[h] > 0, (T.log2(denom[h]) + m[h] * scale) / LOG2E,
                                              -T.infinity(f32))
            T.copy(acc_o, Out[q_i, h0:h0 + block_H, :])
            T.copy(block_sum, Lse[q_i, h0:h0 + block_H])

    return main


@functools.lru_cache(maxsize=None)
def sparse_mla_knobs(heads: int, topk: int) -> dict:
    """64 heads per CTA fill one wgmma M; two warpgroups split the 512 output columns; two stages
    of 64 gathered kv rows (2 x 72 KiB) plus q (72 KiB) fit the 227 KiB of shared memory."""
    return {"block_H": 64, "block_I": 64, "num_stages": 2, "threads": 256}


def validate(q, kv, indices, dim_v: int = 512) -> None:
    import torch

    if q.dim() != 3 or q.dtype != torch.bfloat16:
        raise ValueError(f"q must be bf16 [t, heads, d_qk], got {q.dtype} {tuple(q.shape)}")
    t, heads, d_qk = q.shape
    if kv.dtype != torch.bfloat16 or kv.dim() != 3 or kv.shape[1:] != (1, d_qk):
        raise ValueError(f"kv must be bf16 [s, 1, {d_qk}], got {kv.dtype} {tuple(kv.shape)}")
    if indices.dtype != torch.int32 or indices.dim() != 3 or indices.shape[:2] != (t, 1):
        raise ValueError(f"indices must be int32 [{t}, 1, topk], got {indices.dtype} {tuple(indices.shape)}")
    if not 0 < dim_v < d_qk:
        raise ValueError(f"d_v={dim_v} must lie inside d_qk={d_qk}")
    if heads % 64:
        raise ValueError(f"heads={heads} must be a multiple of 64 (one wgmma M tile per CTA)")


def sparse_mla(q, kv, indices, sm_scale: float | None = None, dim_v: int = 512, out=None, lse=None, **knobs):
    """(out bf16 [t, heads, dim_v], lse fp32 [t, heads]) of sparse MLA prefill."""
    import torch

    validate(q, kv, indices, dim_v)
    t, heads, d_qk = q.shape
    topk = indices.shape[2]
    scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(d_qk)
    params = {**sparse_mla_knobs(heads, topk), **knobs}
    kernel = compile_kernel(sparse_mla_fwd, heads, dim_v, d_qk - dim_v, topk, scale,
                            pass_configs=PASS_CONFIGS, **params)
    out = torch.empty(t, heads, dim_v, dtype=q.dtype, device=q.device) if out is None else out
    lse = torch.empty(t, heads, dtype=torch.float32, device=q.device) if lse is None else lse
    kernel(q.contiguous(), kv.contiguous(), indices.contiguous(), out, lse)
    return out, lse
