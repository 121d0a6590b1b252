"""FlashAttention forward over packed variable-length sequences (as flash_attn_varlen_func takes).

q [total_q, h, d], k [total_k, h_kv, d], v [total_k, h_kv, d_v], o [total_q, h, d_v]; sequence
i holds rows cu_seqlens_q[i]:cu_seqlens_q[i + 1] of q and o and cu_seqlens_k[i]:cu_seqlens_k[i + 1]
of k and v. Masking, GQA and the 192/128 head dims are those of kernels/flash_attention.py (causal
aligned bottom-right per sequence; a row that sees no key returns zeros). One kernel per (head
dims, heads, dtype, causal, schedule) serves every batch: totals, batch size and the longest
query length are run-time values.
"""
# No `from __future__ import annotations`: TileLang evaluates the prim_func annotations eagerly.

from dataclasses import asdict, dataclass
from typing import Optional

from kernels._compile import compile_kernel
from kernels.flash_attention import DTYPES, PASS_CONFIGS, V_HEAD_DIMS, validate


@dataclass(frozen=True)
class VarlenKnobs:
    """Schedule knobs of `flash_attention_varlen_fwd` (T.Pipelined, warp-specialized by TileLang)."""

    block_M: int = 128
    block_N: int = 128
    num_stages: int = 2
    threads: int = 256


_TABLE = {64: VarlenKnobs(), 128: VarlenKnobs(), 192: VarlenKnobs(block_N=64), 256: VarlenKnobs(block_N=64)}


def flash_attention_varlen_fwd(heads: int, kv_heads: int, dim: int, causal: bool, dtype: str = "float16",
                               block_M: int = 128, block_N: int = 128, num_stages: int = 2, threads: int = 256,
                               dim_v: int = 0):
    """Build main(Q, K, V, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, O): one CTA owns block_M query
    rows of one head of one sequence; CTAs past their sequence's end do no work."""
    import tilelang.language as T

    dim_v, accum, groups = dim_v or dim, "float32", heads // kv_heads
    scale = 1.44269504088896340736 / dim**0.5  # log2(e) / sqrt(d): softmax in base 2
    total_q, total_k, batch = T.dynamic("total_q, total_k, batch")

    @T.prim_func
    def main(Q: T.Tensor([total_q, heads, dim], dtype), K: T.Tensor([total_k, kv_heads, dim], dtype),
             V: T.Tensor([total_k, kv_heads, dim_v], dtype), cu_seqlens_q: T.Tensor([batch + 1], "int32"),
             cu_seqlens_k: T.Tensor([batch + 1], "int32"), max_seqlen_q: T.int32,
             O: T.Tensor([total_q, heads, dim_v], dtype)):
        with T.Kernel(T.ceildiv(max_seqlen_q, block_M), heads, batch, threads=threads) as (bx, head, b):
            q0, k0 = cu_seqlens_q[b], cu_seqlens_k[b]
            len_q, len_k = cu_seqlens_q[b + 1] - q0, cu_seqlens_k[b + 1] - k0
            offset = len_k - len_q  # bottom-right causal alignment within the sequence
            Q_shared = T.alloc_shared([block_M, dim], dtype)
            K_shared = T.alloc_shared([block_N, dim], dtype)
            V_shared = T.alloc_shared([block_N, dim_v], dtype)
            O_shared = T.alloc_shared([block_M, dim_v], dtype)
            acc_s = T.alloc_fragment([block_M, block_N], accum)
            p = T.alloc_fragment([block_M, block_N], dtype)
            acc_o = T.alloc_fragment([block_M, dim_v], accum)
            row_max, row_max_prev, row_rescale, row_sum, denom = [T.alloc_fragment([block_M], accum) for _ in range(5)]

            T.copy(Q[q0 + bx * block_M:q0 + (bx + 1) * block_M, head, :], Q_shared)
            T.fill(acc_o, 0)
            T.fill(denom, 0)
            T.fill(row_max, -1.0e30)  # finite "no score yet": a fully masked block never gives inf - inf
            # Key blocks this CTA visits: none past its sequence's end or its last row's causal limit.
            n_blocks = T.if_then_else(bx * block_M < len_q, T.max(0, T.min(
                T.ceildiv(len_k, block_N), T.ceildiv((bx + 1) * block_M + offset, block_N))) if causal
                else T.ceildiv(len_k, block_N), 0)
            for k in T.Pipelined(n_blocks, num_stages=num_stages):
                T.copy(K[k0 + k * block_N:k0 + (k + 1) * block_N, head // groups, :], K_shared)
                # Keys past len_k belong to the next sequence: masked, like those past the diagonal.
                if ((k + 1) * block_N - 1 > bx * block_M + offset) if causal else ((k + 1) * block_N > len_k):
                    for i, j in T.Parallel(block_M, block_N):
                        acc_s[i, j] = T.if_then_else((k * block_N + j <= bx * block_M + i + offset) if causal
                                                     else (k * block_N + j < len_k), 0, -T.infinity(accum))
                else:
                    T.clear(acc_s)
                T.gemm(Q_shared, K_shared, acc_s, transpose_B=True, policy=T.GemmWarpPolicy.FullRow)
                T.copy(row_max, row_max_prev)
                T.reduce_max(acc_s, row_max, dim=1, clear=False)
                for i, j in T.Parallel(block_M, block_N):
                    acc_s[i, j] = T.exp2(acc_s[i, j] * scale - row_max[i] * scale)
                T.reduce_sum(acc_s, row_sum, dim=1)
                for i in T.Parallel(block_M):
                    row_rescale[i] = T.exp2(row_max_prev[i] * scale - row_max[i] * scale)
                    denom[i] = denom[i] * row_rescale[i] + row_sum[i]
                T.copy(acc_s, p)
                for i, j in T.Parallel(block_M, dim_v):
                    acc_o[i, j] *= row_rescale[i]
                T.copy(V[k0 + k * block_N:k0 + (k + 1) * block_N, head // groups, :], V_shared)
                T.gemm(p, V_shared, acc_o, policy=T.GemmWarpPolicy.FullRow)
            for i, j in T.Parallel(block_M, dim_v):
                acc_o[i, j] = T.if_then_else(denom[i] > 0, acc_o[i, j] / denom[i], 0)
            T.copy(acc_o, O_shared)
            # Rows past len_q belong to the next sequence: only this sequence's rows are written.
            for i, j in T.Parallel(block_M, dim_v):
                if bx * block_M + i < len_q:
                    O[q0 + bx * block_M + i, head, j] = O_shared[i, j]

    return main


def compile_flash_attention_varlen(heads: int, kv_heads: int, dim: int, causal: bool, dtype: str,
                                   knobs: Optional[VarlenKnobs] = None, *, target=None):
    """Validate and compile (cached); the kernel is called as kernel(q, k, v, cu_q, cu_k, max_q, o)."""
    validate(1, heads, kv_heads, 1, 1, dim, dtype)
    knobs = knobs or _TABLE[dim]
    return compile_kernel(flash_attention_varlen_fwd, heads, kv_heads, dim, causal, dtype, target=target,
                          pass_configs=PASS_CONFIGS, dim_v=0 if V_HEAD_DIMS[dim] == dim else V_HEAD_DIMS[dim],
                          **asdict(knobs))


def prepare_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q: int, causal: bool = False, *,
                   knobs: Optional[VarlenKnobs] = None, out=None):
    """Check, compile (cached) and return a zero-argument callable computing o (or filling `out`)."""
    import torch

    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError("flash_attention_varlen: q, k, v must be 3-D [total_tokens, heads, head_dim]")
    if k.shape[:2] != v.shape[:2] or q.shape[2] != k.shape[2] or not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"flash_attention_varlen: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} "
                         "disagree in shape or dtype")
    dtype = str(q.dtype).replace("torch.", "")
    validate(1, q.shape[1], k.shape[1], 1, 1, q.shape[2], dtype, dim_v=v.shape[2])
    if dtype not in DTYPES:
        raise ValueError(f"flash_attention_varlen: dtype {dtype} unsupported")
    if cu_seqlens_q.dtype != torch.int32 or cu_seqlens_k.dtype != torch.int32 or len(cu_seqlens_q) != len(cu_seqlens_k):
        raise ValueError("flash_attention_varlen: cu_seqlens_q and cu_seqlens_k must be int32 and of equal length")
    kernel = compile_flash_attention_varlen(q.shape[1], k.shape[1], q.shape[2], causal, dtype, knobs)
    res = out if out is not None else q.new_empty(*q.shape[:2], v.shape[2])
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()

    def run():
        kernel(q, k, v, cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), res)
        return res

    return run
