"""DeepSeek-V3.2 lightning indexer: fp8 scores of every kv position for every query.

logits[t, j] = k_scale[j] * sum_h w[t, h] * relu(q[t, h] . k[j])   for start[t] <= j < end[t]
logits[t, j] = -inf                                                 elsewhere

One CTA owns `block_Q` queries (block_Q * 64 rows of q stay in shared memory) and walks its share
(1 of `kv_splits`, for decode) of the kv blocks that the union of their ranges touches: an fp8 wgmma gives the [block_N, block_Q * 64]
scores, relu and the head weights are applied in registers, and the head sum collapses them to
[block_N, block_Q]. The per-key scale is applied after the head sum (it factors out of it), read
straight from global memory in the epilogue: a register copy would live in the producer warps.
Blocks outside the union are filled with -inf without any arithmetic.
"""

import functools

import tilelang.language as T

from kernels._compile import compile_kernel, sm_count

FP8 = "float8_e4m3"
PASS_CONFIGS = {"tl.enable_fast_math": True}


def lightning_indexer(heads: int = 64, dim: int = 128, block_N: int = 128, block_Q: int = 2,
                      num_stages: int = 2, threads: int = 256, policy: str = "FullRow", kv_splits: int = 1):
    """Builder: Q fp8 [t*heads, dim], K fp8 [s, dim], KScale fp32 [s], W fp32 [t, heads],
    Starts/Ends int32 [t] -> Logits fp32 [t, s] (an output)."""
    t, s = T.dynamic("t"), T.dynamic("s")
    rows = block_Q * heads
    neg_inf = -T.infinity("float32")

    @T.prim_func
    def main(Q: T.Tensor([t * heads, dim], FP8), K: T.Tensor([s, dim], FP8),
             KScale: T.Tensor([s], T.float32), W: T.Tensor([t, heads], T.float32),
             Starts: T.Tensor([t], T.int32), Ends: T.Tensor([t], T.int32),
             Logits: T.Tensor([t, s], T.float32)):
        with T.Kernel(T.ceildiv(t, block_Q), kv_splits, threads=threads) as (bx, by):
            q_shared = T.alloc_shared([rows, dim], FP8)
            k_shared = T.alloc_shared([block_N, dim], FP8)
            w = T.alloc_fragment([block_Q, heads], "float32")
            scores = T.alloc_fragment([block_N, rows], "float32")
            per_head = T.reshape(scores, [block_N, block_Q, heads])
            logits = T.alloc_fragment([block_N, block_Q], "float32")
            start = T.alloc_shared([block_Q], "int32")
            end = T.alloc_shared([block_Q], "int32")
            lo = T.alloc_var("int32")
            hi = T.alloc_var("int32")
            q0 = bx * block_Q
            for i in T.Parallel(block_Q):  # queries past t get an empty range
                start[i] = T.if_then_else(q0 + i < t, T.max(Starts[T.min(q0 + i, t - 1)], 0), s)
                end[i] = T.if_then_else(q0 + i < t, T.min(Ends[T.min(q0 + i, t - 1)], s), 0)
            T.copy(Q[q0 * heads:(q0 + block_Q) * heads, :], q_shared)
            T.copy(W[q0:q0 + block_Q, :], w)
            lo = s
            hi = 0
            for i in T.serial(block_Q):
                if start[i] < end[i]:
                    lo = T.min(lo, start[i])
                    hi = T.max(hi, end[i])
            total = T.ceildiv(hi, block_N) - lo // block_N  # kv blocks in the union of the ranges
            per_split = T.ceildiv(T.max(total, 1), kv_splits)
            first = lo // block_N + by * per_split
            # >= 1 so that the q load is always awaited; a spare block rewrites equal values
            count = T.max(T.min(per_split, total - by * per_split), 1)
            for n in T.Pipelined(count, num_stages=num_stages):
                k0 = (first + n) * block_N
                T.copy(K[k0:k0 + block_N, :], k_shared)
                T.gemm(k_shared, q_shared, scores, transpose_B=True, clear_accum=True,
                       policy=getattr(T.GemmWarpPolicy, policy))
                for j, i, h in T.Parallel(block_N, block_Q, heads):
                    per_head[j, i, h] = T.max(per_head[j, i, h], 0) * w[i, h]
                T.reduce_sum(per_head, logits, dim=2, clear=True)
                for i, j in T.Parallel(block_Q, block_N):
                    if q0 + i < t and k0 + j < s:
                        inside = start[i] <= k0 + j and k0 + j < end[i]
                        Logits[q0 + i, k0 + j] = T.if_then_else(inside, logits[j, i] * KScale[k0 + j], neg_inf)
            for n in T.serial(T.ceildiv(T.ceildiv(s, block_N), kv_splits)):
                blk = n * kv_splits + by
                if blk < lo // block_N or blk >= lo // block_N + total:
                    for i, j in T.Parallel(block_Q, block_N):
                        if q0 + i < t and blk * block_N + j < s:
                            Logits[q0 + i, blk * block_N + j] = neg_inf

    return main


# Schedules a GPU search may pick from (`experiments/dsa_indexer.py`); the first is the default.
# 256 threads = two consumer warpgroups of 64 kv rows each (168 registers, no spills on sm_90a);
# 512 threads with 256-row blocks run out of registers (96 a thread) and spill in the epilogue.
CANDIDATES = (
    {"block_N": 128, "block_Q": 2, "num_stages": 2, "threads": 256},
    {"block_N": 128, "block_Q": 4, "num_stages": 2, "threads": 256},
    {"block_N": 128, "block_Q": 2, "num_stages": 3, "threads": 256},
    {"block_N": 256, "block_Q": 2, "num_stages": 2, "threads": 512},
    # Larger query tiles: four queries (256 q rows, the widest wgmma N) share each K tile, which
    # halves the K traffic per FLOP; one warpgroup of 64 kv rows leaves room for two CTAs per SM.
    {"block_N": 128, "block_Q": 4, "num_stages": 3, "threads": 256},
    {"block_N": 64, "block_Q": 4, "num_stages": 3, "threads": 128},
)


@functools.lru_cache(maxsize=None)
def indexer_knobs(heads: int, dim: int, t: int, s: int, sms: int = 132, choice: int = 0) -> dict:
    """A candidate schedule (two queries of 64 heads fill one wgmma N of 128; each consumer
    warpgroup owns 64 kv rows, so the head sum never leaves a warpgroup), plus the kv split:
    few queries (decode) leave most SMs idle, so the kv blocks are then shared out over CTAs
    (a power of two, >= 4 blocks each)."""
    knobs = {**CANDIDATES[choice], "policy": "FullRow"}
    knobs["block_Q"] = max(knobs["block_Q"] * 64 // heads, 1)
    q_blocks, kv_blocks = -(-t // knobs["block_Q"]), -(-s // knobs["block_N"])
    splits = 1
    while q_blocks * splits < 2 * sms and splits * 2 * 4 <= kv_blocks:
        splits *= 2
    return {**knobs, "kv_splits": splits}


def validate(q, k, k_scale, weights, starts, ends) -> None:
    import torch

    if q.dim() != 3 or q.dtype != torch.float8_e4m3fn:
        raise ValueError(f"q must be float8_e4m3fn [t, heads, dim], got {q.dtype} {tuple(q.shape)}")
    t, heads, dim = q.shape
    if k.dtype != torch.float8_e4m3fn or k.dim() != 2 or k.shape[1] != dim:
        raise ValueError(f"k must be float8_e4m3fn [s, {dim}], got {k.dtype} {tuple(k.shape)}")
    if k_scale.dtype != torch.float32 or k_scale.shape != (k.shape[0],):
        raise ValueError(f"k_scale must be fp32 [{k.shape[0]}], got {k_scale.dtype} {tuple(k_scale.shape)}")
    if weights.dtype != torch.float32 or weights.shape != (t, heads):
        raise ValueError(f"weights must be fp32 [{t}, {heads}], got {weights.dtype} {tuple(weights.shape)}")
    for name, v in (("starts", starts), ("ends", ends)):
        if v.dtype != torch.int32 or v.shape != (t,):
            raise ValueError(f"{name} must be int32 [{t}], got {v.dtype} {tuple(v.shape)}")


def dsa_indexer(q, k, k_scale, weights, starts, ends, out=None, choice: int = 0, **knobs):
    """fp32 logits [t, s] of the lightning indexer (-inf outside each query's [start, end)).
    `choice` picks a CANDIDATES schedule; keyword knobs override single values."""
    import torch

    validate(q, k, k_scale, weights, starts, ends)
    t, heads, dim = q.shape
    params = {**indexer_knobs(heads, dim, t, k.shape[0], sm_count(q.device), choice), **knobs}
    kernel = compile_kernel(lightning_indexer, heads, dim, pass_configs=PASS_CONFIGS, **params)
    if out is None:
        out = torch.empty(t, k.shape[0], dtype=torch.float32, device=q.device)
    kernel(q.reshape(t * heads, dim), k, k_scale, weights.contiguous(), starts, ends, out)
    return out
