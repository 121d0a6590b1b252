"""Sparse MLA backward (DeepSeek-V3.2's training path): the gradients of `kernels.sparse_mla`,
through the selected kv positions only.

With q [t, heads, 576] (512 latent + 64 rope dims), kv [s, 1, 576] whose first 512 dims double
as V, indices [t, 1, topk] (< 0 or >= s: no position), the forward's out [t, heads, 512] and
lse [t, heads] (natural log), and d_out = dL/d out:

    P     = exp(scale * q . kv[idx] - lse)       the forward's probabilities, recomputed
    dP    = d_out . kv[idx, :512]
    dS    = P * (dP - delta) * scale             delta = rowsum(out * d_out), per (query, head)
    dq    = dS @ kv[idx]                         [t, heads, 576]
    dkv[idx] += dS^T @ q  (+ P^T @ d_out on the first 512 dims)   [s, 1, 576], fp32, atomically

One CTA per (query, block of heads) walks the top-k list in blocks of gathered rows; dq stays in
registers, each block's dkv rows are added to global memory with atomics (a position chosen by
many queries gathers all their contributions). Heads: a multiple of 16; 64 per CTA at most.
"""

import tilelang.language as T

from kernels._compile import compile_kernel

LOG2E = 1.4426950408889634
PASS_CONFIGS = {"tl.enable_fast_math": True}


def sparse_mla_bwd_delta(heads: int, dim: int = 512, block_T: int = 16, threads: int = 128):
    """Builder: out, d_out bf16 [t, heads, dim] -> Delta fp32 [t, heads] = rowsum(out * d_out)."""
    t = T.dynamic("t")

    @T.prim_func
    def delta(O: T.Tensor([t, heads, dim], "bfloat16"), dO: T.Tensor([t, heads, dim], "bfloat16"),
              Delta: T.Tensor([t, heads], "float32")):
        with T.Kernel(T.ceildiv(t, block_T), heads, threads=threads) as (bt, h):
            o = T.alloc_fragment([block_T, dim], "float32")
            do = T.alloc_fragment([block_T, dim], "float32")
            acc = T.alloc_fragment([block_T], "float32")
            T.copy(O[bt * block_T:(bt + 1) * block_T, h, :], o)
            T.copy(dO[bt * block_T:(bt + 1) * block_T, h, :], do)
            for i, d in T.Parallel(block_T, dim):
                o[i, d] *= do[i, d]
            T.reduce_sum(o, acc, dim=1)
            T.copy(acc, Delta[bt * block_T:(bt + 1) * block_T, h])

    return delta


def sparse_mla_bwd(heads: int = 128, dim: int = 512, tail: int = 64, topk: int = 2048,
                   sm_scale: float | None = None, block_H: int = 64, block_I: int = 32,
                   num_stages: int = 0, threads: int = 256, vector_atomics: bool = False):
    """Builder: Q bf16 [t, heads, dim+tail], KV bf16 [s, 1, dim+tail], dO bf16 [t, heads, dim],
    Indices int32 [t, 1, topk], Lse, Delta fp32 [t, heads] -> dQ bf16 [t, heads, dim+tail],
    dKV fp32 [s, 1, dim+tail] (accumulated into: zero it first). vector_atomics (16-head blocks, see knobs):
    each block's dkv rows go through shared memory, half a block at a time, and into dKV by
    16-byte atomics (four floats each) instead of two floats per atomic."""
    t, s = T.dynamic("t"), T.dynamic("s")
    scale = sm_scale if sm_scale is not None else (dim + tail) ** -0.5
    groups, steps = heads // block_H, T.ceildiv(topk, block_I)
    bf16, f32, half = "bfloat16", "float32", block_I // 2

    @T.macro
    def add_dkv(dKV, Indices, acc, stage, valid, width, col0, q_i, i):  # the block's dkv rows, atomically
        if vector_atomics:
            for u in T.unroll(2):
                for j, d in T.Parallel(block_I, width):
                    if j < half:
                        stage[j, d] = acc[j + u * half, d]
                for j, d in T.Parallel(half, width // 4):
                    if valid[j + u * half]:
                        T.atomic_addx4(dKV[Indices[q_i, 0, T.min(i * block_I + j + u * half, topk - 1)], 0, col0 + d * 4],
                                       stage[j, d * 4])
        else:
            for j, d in T.Parallel(block_I, width):
                if valid[j]:
                    T.atomic_add(dKV[Indices[q_i, 0, T.min(i * block_I + j, topk - 1)], 0, col0 + d], acc[j, d])

    @T.prim_func
    def main(Q: T.Tensor([t, heads, dim + tail], bf16), KV: T.Tensor([s, 1, dim + tail], bf16),
             dO: T.Tensor([t, heads, dim], bf16), Indices: T.Tensor([t, 1, topk], T.int32),
             Lse: T.Tensor([t, heads], f32), Delta: T.Tensor([t, heads], f32),
             dQ: T.Tensor([t, heads, dim + tail], bf16), dKV: T.Tensor([s, 1, dim + tail], f32)):
        with T.Kernel(t * groups, threads=threads) as bx:
            q_i, h0 = bx // groups, (bx % groups) * block_H
            q_s = T.alloc_shared([block_H, dim], bf16)
            q_tail = T.alloc_shared([block_H, tail], bf16)
            do_s = T.alloc_shared([block_H, dim], bf16)
            kv_s = T.alloc_shared([block_I, dim], bf16)
            kv_tail = T.alloc_shared([block_I, tail], bf16)
            p_s = T.alloc_shared([block_H, block_I], bf16)
            ds_s = T.alloc_shared([block_H, block_I], bf16)
            valid = T.alloc_shared([block_I], "bool")  # read by loops of two layouts (scores, dkv rows)
            acc_p = T.alloc_fragment([block_H, block_I], f32)
            acc_dp = T.alloc_fragment([block_H, block_I], f32)
            acc_dq = T.alloc_fragment([block_H, dim], f32)
            acc_dq_tail = T.alloc_fragment([block_H, tail], f32)
            acc_dkv = T.alloc_fragment([block_I, dim], f32)
            acc_dkv_tail = T.alloc_fragment([block_I, tail], f32)
            lse = T.alloc_fragment([block_H], f32)
            delta = T.alloc_fragment([block_H], f32)
            dkv_s, dkv_tail_s = (T.alloc_shared([half, dim], f32), T.alloc_shared([half, tail], f32)) if vector_atomics \
                else (None, None)

            T.copy(Q[q_i, h0:h0 + block_H, :dim], q_s)
            T.copy(Q[q_i, h0:h0 + block_H, dim:], q_tail)
            T.copy(dO[q_i, h0:h0 + block_H, :], do_s)
            for h in T.Parallel(block_H):
                lse[h] = Lse[q_i, h0 + h] * LOG2E  # base 2, as the scores below
                delta[h] = Delta[q_i, h0 + h]
            T.clear(acc_dq)
            T.clear(acc_dq_tail)
            for i in T.Pipelined(steps, num_stages=num_stages):
                # Gather the block's rows (an invalid index reads a clamped row, masked below).
                for j in T.Parallel(block_I):
                    idx = Indices[q_i, 0, T.min(i * block_I + j, topk - 1)]
                    valid[j] = i * block_I + j < topk and idx >= 0 and idx < s
                for j, d in T.Parallel(block_I, dim):
                    kv_s[j, d] = KV[T.max(T.min(Indices[q_i, 0, T.min(i * block_I + j, topk - 1)], s - 1), 0), 0, d]
                for j, d in T.Parallel(block_I, tail):
                    kv_tail[j, d] = KV[T.max(T.min(Indices[q_i, 0, T.min(i * block_I + j, topk - 1)], s - 1), 0), 0, dim + d]
                # P, recomputed from the forward's LSE; dS = P (dP - delta) scale.
                T.gemm(q_s, kv_s, acc_p, transpose_B=True, clear_accum=True, policy=T.GemmWarpPolicy.FullCol)
                T.gemm(q_tail, kv_tail, acc_p, transpose_B=True, policy=T.GemmWarpPolicy.FullCol)
                for h, j in T.Parallel(block_H, block_I):
                    acc_p[h, j] = T.if_then_else(valid[j], T.exp2(acc_p[h, j] * (scale * LOG2E) - lse[h]), 0)
                T.copy(acc_p, p_s)
                T.gemm(do_s, kv_s, acc_dp, transpose_B=True, clear_accum=True, policy=T.GemmWarpPolicy.FullCol)
                for h, j in T.Parallel(block_H, block_I):
                    acc_dp[h, j] = acc_p[h, j] * (acc_dp[h, j] - delta[h]) * scale
                T.copy(acc_dp, ds_s)
                # dq += dS kv; the block's dkv rows = dS^T q (+ P^T dO on the value dims).
                T.gemm(ds_s, kv_s, acc_dq, policy=T.GemmWarpPolicy.FullCol)
                T.gemm(ds_s, kv_tail, acc_dq_tail, policy=T.GemmWarpPolicy.FullCol)
                T.gemm(ds_s, q_s, acc_dkv, transpose_A=True, clear_accum=True, policy=T.GemmWarpPolicy.FullCol)
                T.gemm(p_s, do_s, acc_dkv, transpose_A=True, policy=T.GemmWarpPolicy.FullCol)
                T.gemm(ds_s, q_tail, acc_dkv_tail, transpose_A=True, clear_accum=True, policy=T.GemmWarpPolicy.FullCol)
                add_dkv(dKV, Indices, acc_dkv, dkv_s, valid, dim, 0, q_i, i)
                add_dkv(dKV, Indices, acc_dkv_tail, dkv_tail_s, valid, tail, dim, q_i, i)
            T.copy(acc_dq, dQ[q_i, h0:h0 + block_H, :dim])
            T.copy(acc_dq_tail, dQ[q_i, h0:h0 + block_H, dim:])

    return main


def knobs(heads: int) -> dict:
    """The schedule: 64 heads per CTA (two warpgroups), fewer heads in one CTA of 128 threads;
    16-head blocks add dkv by 16-byte atomics (1.01-1.12x at 16 heads on the H200, 0.94-0.99x at
    64 and 128: results/h200/ab/20261203T2140)."""
    if heads <= 0 or heads % 16:
        raise ValueError(f"sparse MLA backward takes a multiple of 16 query heads, got {heads}")
    block_H = next(b for b in (64, 32, 16) if heads % b == 0)
    return {"block_H": block_H, "block_I": 32, "num_stages": 0, "threads": 256 if block_H == 64 else 128,
            "vector_atomics": block_H == 16}


def sparse_mla_backward(q, kv, indices, out, lse, d_out, sm_scale: float | None = None, **overrides):
    """(dq bf16 [t, heads, d_qk], dkv fp32 [s, 1, d_qk]) for the forward's inputs and outputs."""
    import torch

    from kernels.sparse_mla import validate

    t, heads, d_qk = q.shape
    dim_v = out.shape[-1]
    validate(q, kv, indices, dim_v)
    if d_out.shape != out.shape or out.shape[:2] != (t, heads) or lse.shape != (t, heads):
        raise ValueError(f"out {tuple(out.shape)}, d_out {tuple(d_out.shape)} and lse {tuple(lse.shape)} "
                         f"do not match q {tuple(q.shape)}")
    topk = indices.shape[2]
    scale = sm_scale if sm_scale is not None else d_qk ** -0.5
    params = {**knobs(heads), **overrides}
    d_out, out = d_out.contiguous().to(torch.bfloat16), out.contiguous().to(torch.bfloat16)
    delta = torch.empty(t, heads, dtype=torch.float32, device=q.device)
    compile_kernel(sparse_mla_bwd_delta, heads, dim_v, pass_configs=PASS_CONFIGS)(out, d_out, delta)
    dq = torch.empty_like(q)
    dkv = torch.zeros(kv.shape, dtype=torch.float32, device=kv.device)
    kernel = compile_kernel(sparse_mla_bwd, heads, dim_v, d_qk - dim_v, topk, scale, pass_configs=PASS_CONFIGS,
                            **params)
    kernel(q.contiguous(), kv.contiguous(), d_out, indices.contiguous(), lse.contiguous().float(), delta, dq, dkv)
    return dq, dkv
