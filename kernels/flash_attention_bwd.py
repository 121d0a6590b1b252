"""FlashAttention backward in TileLang, with the forward that saves what it needs (the row LSE).

Layout BSHD, as kernels/flash_attention.py: q, o, do [b, s_q, h, d], k, v [b, s_k, h_kv, d]; d_v = d
(head dims 64 and 128); fp16 or bf16; GQA (query head `h` reads KV head `h // (h / h_kv)`, and dK,
dV sum over the group); causal masks align bottom-right (query row r sees key c when
c <= r + s_k - s_q), for s_q <= s_k, so that every query row sees a key.

Three launches per backward, FlashAttention-2's schedule:
  preprocess  delta[b, h, r] = sum_d dO * O (fp32), the rowsum that the softmax gradient needs;
  main        one CTA per (block of block_M keys, query head, batch) holds K, V and the dK, dV
              accumulators, walks the query blocks this key block is visible to, recomputes
              P^T = exp2(K Q^T * scale - lse) from the forward's LSE, and accumulates
              dV += P^T dO, dS^T = P^T * (V dO^T - delta), dK += dS^T Q; dQ += dS K goes to an
              fp32 buffer by TMA reduce-add (atomic across the key blocks of a query block);
  dQ cast     fp32 -> dtype (and dK, dV for GQA, which the query heads of a group add up in
              fp32 the same way), by PyTorch.
The forward here is the serial schedule of kernels/flash_attention.py's, written again with one
more output: LSE in base 2 of the scaled scores, lse = log2(sum_c exp2(s_c * scale)).
"""
# No `from __future__ import annotations`: TileLang evaluates the prim_func annotations eagerly.

from dataclasses import asdict, dataclass
from typing import Optional

from kernels._compile import compile_kernel

HEAD_DIMS = (64, 128)
DTYPES = ("float16", "bfloat16")
LOG2E = 1.44269504088896340736
PASS_CONFIGS = {"tl.enable_fast_math": True}


@dataclass(frozen=True)
class BwdKnobs:
    """Tiles of the backward's main kernel (block_M keys per CTA, block_N queries per step)."""

    block_M: int = 128
    block_N: int = 32
    num_stages: int = 2
    threads: int = 256


BWD_TABLE = {64: BwdKnobs(128, 64, 2, 256), 128: BwdKnobs(128, 32, 2, 256)}
FWD_TABLE = {64: (128, 128, 2, 256), 128: (128, 128, 2, 256)}  # block_M, block_N, num_stages, threads


def flash_attention_fwd_lse(batch: int, heads: int, kv_heads: int, seq_q: int, seq_k: int, dim: int,
                            causal: bool, dtype: str = "bfloat16", block_M: int = 128, block_N: int = 128,
                            num_stages: int = 2, threads: int = 256):
    """Forward: main(Q, K, V, O, LSE); one CTA owns block_M query rows of one head."""
    import tilelang.language as T

    accum, full_row = "float32", T.GemmWarpPolicy.FullRow
    groups, offset, scale = heads // kv_heads, seq_k - seq_q, 1.44269504088896340736 / dim**0.5
    n_keys = T.ceildiv(seq_k, block_N)

    @T.prim_func
    def main(Q: T.Tensor([batch, seq_q, heads, dim], dtype), K: T.Tensor([batch, seq_k, kv_heads, dim], dtype),
             V: T.Tensor([batch, seq_k, kv_heads, dim], dtype), O: T.Tensor([batch, seq_q, heads, dim], dtype),
             LSE: T.Tensor([batch, heads, seq_q], accum)):
        with T.Kernel(T.ceildiv(seq_q, block_M), heads, batch, threads=threads) as (bx, head, b):
            Q_shared = T.alloc_shared([block_M, dim], dtype)
            K_shared = T.alloc_shared([block_N, dim], dtype)
            V_shared = T.alloc_shared([block_N, dim], dtype)
            acc_s = T.alloc_fragment([block_M, block_N], accum)
            p = T.alloc_fragment([block_M, block_N], dtype)
            acc_o = T.alloc_fragment([block_M, dim], accum)
            row_max, row_max_prev, rescale, row_sum, denom = [T.alloc_fragment([block_M], accum) for _ in range(5)]
            T.copy(Q[b, bx * block_M:(bx + 1) * block_M, head, :], Q_shared)
            T.fill(acc_o, 0)
            T.fill(denom, 0)
            T.fill(row_max, -1.0e30)  # finite "no score yet": a fully masked block gives exp2(-inf) = 0, no NaN
            n_blocks = T.min(n_keys, T.ceildiv((bx + 1) * block_M + offset, block_N)) if causal else n_keys
            for k in T.Pipelined(n_blocks, num_stages=num_stages):
                T.copy(K[b, k * block_N:(k + 1) * block_N, head // groups, :], K_shared)
                # Only blocks crossing the diagonal (causal) or the ragged end of the keys are masked.
                if ((k + 1) * block_N - 1 > bx * block_M + offset) if causal else ((k + 1) * block_N > seq_k):
                    for i, j in T.Parallel(block_M, block_N):
                        acc_s[i, j] = T.if_then_else((k * block_N + j <= bx * block_M + i + offset) if causal
                                                     else (k * block_N + j < seq_k), 0, -T.infinity(accum))
                else:
                    T.clear(acc_s)
                T.gemm(Q_shared, K_shared, acc_s, transpose_B=True, policy=full_row)
                T.copy(row_max, row_max_prev)
                T.reduce_max(acc_s, row_max, dim=1, clear=False)
                for i, j in T.Parallel(block_M, block_N):
                    acc_s[i, j] = T.exp2(acc_s[i, j] * scale - row_max[i] * scale)
                T.reduce_sum(acc_s, row_sum, dim=1)
                for i in T.Parallel(block_M):
                    rescale[i] = T.exp2(row_max_prev[i] * scale - row_max[i] * scale)
                    denom[i] = denom[i] * rescale[i] + row_sum[i]
                T.copy(acc_s, p)
                for i, j in T.Parallel(block_M, dim):
                    acc_o[i, j] *= rescale[i]
                T.copy(V[b, k * block_N:(k + 1) * block_N, head // groups, :], V_shared)
                T.gemm(p, V_shared, acc_o, policy=full_row)
            for i, j in T.Parallel(block_M, dim):
                acc_o[i, j] = acc_o[i, j] / denom[i]
            for i in T.Parallel(block_M):
                denom[i] = T.log2(denom[i]) + row_max[i] * scale  # the row's LSE, base 2
            T.copy(acc_o, Q_shared)  # Q is dead: stage the output through its tile
            T.copy(Q_shared, O[b, bx * block_M:(bx + 1) * block_M, head, :])
            T.copy(denom, LSE[b, head, bx * block_M:(bx + 1) * block_M])

    return main


def flash_attention_bwd_preprocess(batch: int, heads: int, seq_q: int, dim: int, dtype: str = "bfloat16",
                                   block: int = 64):
    """delta[b, h, r] = sum_d dO[b, r, h, d] * O[b, r, h, d], in fp32."""
    import tilelang.language as T

    @T.prim_func
    def main(O: T.Tensor([batch, seq_q, heads, dim], dtype), dO: T.Tensor([batch, seq_q, heads, dim], dtype),
             Delta: T.Tensor([batch, heads, seq_q], "float32")):
        with T.Kernel(T.ceildiv(seq_q, block), heads, batch, threads=128) as (bx, head, b):
            o = T.alloc_fragment([block, dim], dtype)
            do = T.alloc_fragment([block, dim], dtype)
            prod = T.alloc_fragment([block, dim], "float32")
            delta = T.alloc_fragment([block], "float32")
            T.copy(O[b, bx * block:(bx + 1) * block, head, :], o)
            T.copy(dO[b, bx * block:(bx + 1) * block, head, :], do)
            for i, j in T.Parallel(block, dim):
                prod[i, j] = T.cast(o[i, j], "float32") * T.cast(do[i, j], "float32")
            T.reduce_sum(prod, delta, dim=1)
            T.copy(delta, Delta[b, head, bx * block:(bx + 1) * block])

    return main


def flash_attention_bwd(batch: int, heads: int, kv_heads: int, seq_q: int, seq_k: int, dim: int,
                        causal: bool, dtype: str = "bfloat16", block_M: int = 128, block_N: int = 32,
                        num_stages: int = 2, threads: int = 256):
    """Backward: main(Q, K, V, dO, LSE, Delta, dQ, dK, dV). dQ is fp32 and must start at zero; dK, dV
    are written in `dtype` (MHA) or, with GQA, added in fp32 into buffers that start at zero."""
    import tilelang.language as T

    accum, full_row = "float32", T.GemmWarpPolicy.FullRow
    groups, offset, sm_scale = heads // kv_heads, seq_k - seq_q, dim**-0.5
    scale, kv_grad = sm_scale * 1.44269504088896340736, dtype if heads == kv_heads else accum
    n_q = T.ceildiv(seq_q, block_N)

    @T.macro
    def store(grad, out, staged, bx, head, b):
        T.copy(grad, staged)
        if heads == kv_heads:
            T.copy(staged, out[b, bx * block_M:(bx + 1) * block_M, head, :])
        else:  # the query heads of a group add up in fp32
            T.atomic_add(out[b, bx * block_M:(bx + 1) * block_M, head // groups, :], staged, use_tma=True)

    @T.prim_func
    def main(Q: T.Tensor([batch, seq_q, heads, dim], dtype), K: T.Tensor([batch, seq_k, kv_heads, dim], dtype),
             V: T.Tensor([batch, seq_k, kv_heads, dim], dtype), dO: T.Tensor([batch, seq_q, heads, dim], dtype),
             LSE: T.Tensor([batch, heads, seq_q], accum), Delta: T.Tensor([batch, heads, seq_q], accum),
             dQ: T.Tensor([batch, seq_q, heads, dim], accum), dK: T.Tensor([batch, seq_k, kv_heads, dim], kv_grad),
             dV: T.Tensor([batch, seq_k, kv_heads, dim], kv_grad)):
        with T.Kernel(T.ceildiv(seq_k, block_M), heads, batch, threads=threads) as (bx, head, b):
            K_shared = T.alloc_shared([block_M, dim], dtype)
            V_shared = T.alloc_shared([block_M, dim], dtype)
            q_shared = T.alloc_shared([block_N, dim], dtype)
            do_shared = T.alloc_shared([block_N, dim], dtype)
            ds_shared = T.alloc_shared([block_M, block_N], dtype)
            lse = T.alloc_shared([block_N], accum)
            delta = T.alloc_shared([block_N], accum)
            p = T.alloc_fragment([block_M, block_N], accum)  # P^T: keys x queries
            dp = T.alloc_fragment([block_M, block_N], accum)  # dP^T = V dO^T
            p_cast = T.alloc_fragment([block_M, block_N], dtype)
            ds_cast = T.alloc_fragment([block_M, block_N], dtype)
            dk = T.alloc_fragment([block_M, dim], accum)
            dv = T.alloc_fragment([block_M, dim], accum)
            dq = T.alloc_fragment([block_N, dim], accum)
            dq_shared = T.alloc_shared([block_N, dim], accum)
            dk_shared = T.alloc_shared([block_M, dim], kv_grad)
            dv_shared = T.alloc_shared([block_M, dim], kv_grad)
            T.copy(K[b, bx * block_M:(bx + 1) * block_M, head // groups, :], K_shared)
            T.copy(V[b, bx * block_M:(bx + 1) * block_M, head // groups, :], V_shared)
            T.clear(dk)
            T.clear(dv)
            # Causal: the first query block that sees this key block (row r sees key c if c <= r + offset).
            first = T.max(bx * block_M - offset, 0) // block_N if causal else 0
            for k in T.Pipelined(first, n_q, num_stages=num_stages):
                T.copy(Q[b, k * block_N:(k + 1) * block_N, head, :], q_shared)
                T.clear(p)
                T.gemm(K_shared, q_shared, p, transpose_B=True, policy=full_row)
                T.copy(LSE[b, head, k * block_N:(k + 1) * block_N], lse)
                for i, j in T.Parallel(block_M, block_N):  # recompute P^T; masked and padded pairs are 0
                    p[i, j] = T.if_then_else(
                        T.And(k * block_N + j < seq_q, (bx * block_M + i <= k * block_N + j + offset) if causal
                              else (bx * block_M + i < seq_k)),
                        T.exp2(p[i, j] * scale - lse[j]), 0)
                T.copy(dO[b, k * block_N:(k + 1) * block_N, head, :], do_shared)
                T.clear(dp)
                T.gemm(V_shared, do_shared, dp, transpose_B=True, policy=full_row)
                T.copy(p, p_cast)
                T.gemm(p_cast, do_shared, dv, policy=full_row)
                T.copy(Delta[b, head, k * block_N:(k + 1) * block_N], delta)
                for i, j in T.Parallel(block_M, block_N):
                    ds_cast[i, j] = p[i, j] * (dp[i, j] - delta[j]) * sm_scale
                T.gemm(ds_cast, q_shared, dk, policy=full_row)
                T.copy(ds_cast, ds_shared)
                T.clear(dq)
                T.gemm(ds_shared, K_shared, dq, transpose_A=True)
                T.copy(dq, dq_shared)
                T.atomic_add(dQ[b, k * block_N:(k + 1) * block_N, head, :], dq_shared, use_tma=True)
            store(dk, dK, dk_shared, bx, head, b)
            store(dv, dV, dv_shared, bx, head, b)

    return main


def validate(batch: int, heads: int, kv_heads: int, seq_q: int, seq_k: int, dim: int, causal: bool,
             dtype: str) -> None:
    """Refuse what these kernels do not implement, before anything is compiled."""
    if dim not in HEAD_DIMS:
        raise ValueError(f"flash_attention_bwd: head dim {dim} unsupported; supported: {HEAD_DIMS}")
    if dtype not in DTYPES:
        raise ValueError(f"flash_attention_bwd: dtype {dtype} unsupported; supported: {DTYPES}")
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(f"flash_attention_bwd: {heads} query heads is not a multiple of {kv_heads} KV heads")
    if min(batch, seq_q, seq_k) < 1:
        raise ValueError(f"flash_attention_bwd: empty input (batch={batch}, s_q={seq_q}, s_k={seq_k})")
    if causal and seq_q > seq_k:
        raise ValueError(f"flash_attention_bwd: causal with s_q={seq_q} > s_k={seq_k} leaves rows without a key")


def _shape(q, k, v) -> tuple:
    if q.dim() != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(f"flash_attention_bwd: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} "
                         "must be [b, s_q, h, d], [b, s_k, h_kv, d] twice")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"flash_attention_bwd: dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    return q.shape[0], q.shape[2], k.shape[2], q.shape[1], k.shape[1], q.shape[3], str(q.dtype).replace("torch.", "")


def compile_forward(batch, heads, kv_heads, seq_q, seq_k, dim, causal, dtype, target=None):
    validate(batch, heads, kv_heads, seq_q, seq_k, dim, causal, dtype)
    return compile_kernel(flash_attention_fwd_lse, batch, heads, kv_heads, seq_q, seq_k, dim, causal, dtype,
                          *FWD_TABLE[dim], out_idx=[3, 4], target=target, pass_configs=PASS_CONFIGS)


def compile_backward(batch, heads, kv_heads, seq_q, seq_k, dim, causal, dtype,
                     knobs: Optional[BwdKnobs] = None, target=None):
    """(preprocess, main) kernels, compiled once per shape."""
    validate(batch, heads, kv_heads, seq_q, seq_k, dim, causal, dtype)
    pre = compile_kernel(flash_attention_bwd_preprocess, batch, heads, seq_q, dim, dtype, out_idx=[2],
                         target=target, pass_configs=PASS_CONFIGS)
    main = compile_kernel(flash_attention_bwd, batch, heads, kv_heads, seq_q, seq_k, dim, causal, dtype,
                          target=target, pass_configs=PASS_CONFIGS, **asdict(knobs or BWD_TABLE[dim]))
    return pre, main


def forward(q, k, v, causal: bool = False):
    """(o, lse): the attention output [b, s_q, h, d] and the rows' LSE [b, h, s_q] (fp32, base 2)."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return compile_forward(*_shape(q, k, v)[:6], causal, _shape(q, k, v)[6])(q, k, v)


def prepare_backward(q, k, v, o, lse, do, causal: bool = False, knobs: Optional[BwdKnobs] = None):
    """A zero-argument callable returning (dq, dk, dv) for the saved forward (q, k, v, o, lse) and
    the output gradient do; everything it launches is the backward (what a benchmark times)."""
    import torch

    shape = _shape(q, k, v)
    pre, main = compile_backward(*shape[:6], causal, shape[6], knobs)
    q, k, v, o, do = (t.contiguous() for t in (q, k, v, o, do))
    mha = shape[1] == shape[2]

    def run():
        delta = pre(o, do)
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        dk, dv = ((torch.empty_like(k), torch.empty_like(v)) if mha else
                  (torch.zeros(k.shape, dtype=torch.float32, device=q.device) for _ in range(2)))
        main(q, k, v, do, lse, delta, dq, dk, dv)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)

    return run


def backward(q, k, v, o, lse, do, causal: bool = False):
    """(dq, dk, dv) of softmax(q k^T / sqrt(d)) v for the output gradient do."""
    return prepare_backward(q, k, v, o, lse, do, causal)()
