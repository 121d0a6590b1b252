"""MLA decode (DeepSeek multi-head latent attention) over a paged KV cache, in TileLang.

One latent KV head (576 = 512 latent + 64 rope columns; V is the first 512) is shared by all
h_q query heads and all s_q new tokens, so the kernel folds (token, head) into one row axis of
s_q * h_q rows (row = token * h_q + head) and runs flash attention over the cache with those rows
as the M dimension of the tensor-core GEMMs. The cache is split into chunks of KV blocks (split-KV)
so that small batches still fill the GPU; a second kernel merges the chunks by their LSE.

Layouts (FlashMLA's): q [b, s_q, h_q, 576], kv_cache [num_pages, 64, 1, 576],
block_table int32 [b, max_pages], cache_seqlens int32 [b]; out [b, s_q, h_q, 512],
lse fp32 [b, h_q, s_q] (natural log). Query token i of s_q sees cache positions
< len - (s_q - 1 - i): the new tokens are already the last s_q entries of the cache.
"""

import functools
import math
from dataclasses import dataclass

from kernels._compile import compile_kernel
from kernels.mla_common import D_PE, D_V, PAGE, check_mla_inputs, chunk_blocks, pick_num_splits

D_QK = D_V + D_PE
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@dataclass(frozen=True)
class Knobs:
    """Schedule of the split-KV kernel; block_H must divide s_q * h_q, block_N divide 64."""

    block_H: int = 64
    block_N: int = 64
    num_splits: int = 1
    stages: int = 1
    threads: int = 256


def mla_decode_split_kv(h_q, s_q, dtype, sm_scale, block_H, block_N, num_splits, stages, threads):
    """Attention of one (row block, sequence, KV chunk) per CTA; partial O and log2-LSE out.

    With num_splits == 1 it writes the final output and natural-log LSE [b, h_q, s_q] directly.
    """
    import tilelang.language as T

    rows, accum = s_q * h_q, "float32"
    final = num_splits == 1
    o_dtype = dtype if final else accum
    scale = sm_scale * LOG2E  # scores go through exp2, so fold log2(e) into the scale
    batch, num_tokens, max_pages = T.dynamic("batch num_tokens max_pages")
    lse_shape = [batch, h_q, s_q] if final else [batch, num_splits, rows]

    @T.prim_func
    def split_kv(
        Q: T.Tensor([batch, rows, D_QK], dtype),
        KV: T.Tensor([num_tokens, D_QK], dtype),
        block_table: T.Tensor([batch, max_pages], "int32"),
        cache_seqlens: T.Tensor([batch], "int32"),
        chunk: T.int32,  # KV blocks per split, the same for every sequence
        O: T.Tensor([batch, num_splits, rows, D_V], o_dtype),
        LSE: T.Tensor(lse_shape, accum),
    ):
        with T.Kernel(rows // block_H, batch, num_splits, threads=threads) as (g, b, split):
            Q_s = T.alloc_shared([block_H, D_V], dtype)
            Qpe_s = T.alloc_shared([block_H, D_PE], dtype)
            KV_s = T.alloc_shared([block_N, D_V], dtype)
            Kpe_s = T.alloc_shared([block_N, D_PE], dtype)
            P_s = T.alloc_shared([block_H, block_N], dtype)
            S = T.alloc_fragment([block_H, block_N], accum)
            acc_o = T.alloc_fragment([block_H, D_V], accum)
            m = T.alloc_fragment([block_H], accum)
            m_prev = T.alloc_fragment([block_H], accum)
            alpha = T.alloc_fragment([block_H], accum)
            row_sum = T.alloc_fragment([block_H], accum)
            l = T.alloc_fragment([block_H], accum)

            seqlen = cache_seqlens[b]
            n_blocks = T.ceildiv(seqlen, block_N)
            first = split * chunk
            n_iter = T.max(T.min(chunk, n_blocks - first), 0)
            r0 = g * block_H
            T.copy(Q[b, r0:r0 + block_H, 0:D_V], Q_s)
            T.copy(Q[b, r0:r0 + block_H, D_V:D_QK], Qpe_s)
            T.fill(acc_o, 0)
            T.fill(l, 0)
            # A finite floor (not -inf) keeps exp2(m_prev - m) finite while a row has seen only
            # masked keys; masked scores stay -inf and contribute exactly zero.
            T.fill(m, -1e30)

            for it in T.Pipelined(n_iter, num_stages=stages):
                blk = first + it
                tok = block_table[b, blk * block_N // PAGE] * PAGE + blk * block_N % PAGE
                T.copy(KV[tok:tok + block_N, 0:D_V], KV_s)
                T.copy(KV[tok:tok + block_N, D_V:D_QK], Kpe_s)
                T.gemm(Q_s, KV_s, S, transpose_B=True, policy=T.GemmWarpPolicy.FullCol, clear_accum=True)
                T.gemm(Qpe_s, Kpe_s, S, transpose_B=True, policy=T.GemmWarpPolicy.FullCol)
                if blk == n_blocks - 1:  # length and causal limits both fall in the last block
                    for i, j in T.Parallel(block_H, block_N):
                        visible = seqlen - s_q + 1 + (r0 + i) // h_q
                        S[i, j] = T.if_then_else(blk * block_N + j < visible, S[i, j], -T.infinity(accum))
                T.copy(m, m_prev)
                T.reduce_max(S, m, dim=1, clear=False)
                for i in T.Parallel(block_H):
                    alpha[i] = T.exp2((m_prev[i] - m[i]) * scale)
                for i, j in T.Parallel(block_H, block_N):
                    S[i, j] = T.exp2(S[i, j] * scale - m[i] * scale)
                T.reduce_sum(S, row_sum, dim=1)
                for i in T.Parallel(block_H):
                    l[i] = l[i] * alpha[i] + row_sum[i]
                T.copy(S, P_s)
                for i, j in T.Parallel(block_H, D_V):
                    acc_o[i, j] *= alpha[i]
                T.gemm(P_s, KV_s, acc_o, policy=T.GemmWarpPolicy.FullCol)

            # A row that saw no visible key here (empty chunk, or the first token of s_q = 2 in a
            # chunk holding only the last position) has l = 0: O stays 0 and its LSE is -inf.
            for i, j in T.Parallel(block_H, D_V):
                acc_o[i, j] /= T.max(l[i], 1e-30)
            if n_iter > 0:  # the combine skips empty chunks, so they write nothing
                T.copy(acc_o, O[b, split, r0:r0 + block_H, :])
            for i in T.Parallel(block_H):
                if final:
                    LSE[b, (r0 + i) % h_q, (r0 + i) // h_q] = (T.log2(l[i]) + m[i] * scale) * LN2
                else:
                    LSE[b, split, r0 + i] = T.log2(l[i]) + m[i] * scale

    return split_kv


def mla_decode_combine(h_q, s_q, dtype, num_splits, threads=128):
    """Merge the chunks of one (sequence, row) by their log2-LSE into O and natural-log LSE."""
    import tilelang.language as T

    rows, accum = s_q * h_q, "float32"
    batch = T.dynamic("batch")

    @T.prim_func
    def combine(
        O_part: T.Tensor([batch, num_splits, rows, D_V], accum),
        LSE_part: T.Tensor([batch, num_splits, rows], accum),
        O: T.Tensor([batch, rows, D_V], dtype),
        LSE: T.Tensor([batch, h_q, s_q], accum),
    ):
        with T.Kernel(rows, batch, threads=threads) as (r, b):
            acc = T.alloc_fragment([D_V], accum)
            lse_max = T.alloc_local([1], accum)
            total = T.alloc_local([1], accum)
            weight = T.alloc_local([1], accum)
            lse_max[0] = -T.infinity(accum)
            for s in T.serial(num_splits):
                lse_max[0] = T.max(lse_max[0], LSE_part[b, s, r])
            total[0] = 0
            for s in T.serial(num_splits):
                total[0] += T.exp2(LSE_part[b, s, r] - lse_max[0])
            T.clear(acc)
            for s in T.serial(num_splits):
                if LSE_part[b, s, r] > -T.infinity(accum):  # empty chunks wrote no output
                    weight[0] = T.exp2(LSE_part[b, s, r] - lse_max[0]) / total[0]
                    for j in T.Parallel(D_V):
                        acc[j] += O_part[b, s, r, j] * weight[0]
            for j in T.Parallel(D_V):
                O[b, r, j] = acc[j]
            LSE[b, r % h_q, r // h_q] = (T.log2(total[0]) + lse_max[0]) * LN2

    return combine


@functools.lru_cache(maxsize=None)
def _sm_count() -> int:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).multi_processor_count
    return 132  # H100 SXM, for compile-only use


@functools.lru_cache(maxsize=512)
def choose_knobs(batch: int, h_q: int, s_q: int, dtype: str, max_seqlen: int,
                 total_seqlen: int | None = None) -> Knobs:
    """Heuristic table (cached): 64-row tiles of (token, head) rows, 64-key blocks double-buffered
    (231 KB of shared memory at block_H 64: the most that fits), splits from the work balance."""
    rows = s_q * h_q
    block_H = min(64, rows)
    block_N = 64
    total = total_seqlen if total_seqlen is not None else batch * max_seqlen
    splits = pick_num_splits(batch, rows // block_H, math.ceil(max_seqlen / block_N),
                             math.ceil(total / block_N), _sm_count())
    return Knobs(block_H=block_H, block_N=block_N, num_splits=splits, stages=2, threads=256)


def _torch_dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def mla_decode(q, kv_cache, block_table, cache_seqlens, *, softmax_scale=None, knobs=None,
               max_seqlen: int | None = None, check: bool = True):
    """Paged MLA decode; returns (out [b, s_q, h_q, 512], lse fp32 [b, h_q, s_q], natural log).

    check=True validates the inputs and reads the longest length (one device sync); the timed
    path passes check=False with max_seqlen and knobs chosen once beforehand.
    """
    import torch

    if check:
        max_seqlen = check_mla_inputs(q, kv_cache, block_table, cache_seqlens)
    elif max_seqlen is None:
        max_seqlen = int(cache_seqlens.max())
    b, s_q, h_q, d_qk = q.shape
    rows, dtype = s_q * h_q, _torch_dtype_name(q.dtype)
    k = knobs or choose_knobs(b, h_q, s_q, dtype, max_seqlen)
    if rows % k.block_H or PAGE % k.block_N:
        raise ValueError(f"block_H must divide s_q*h_q={rows} and block_N divide {PAGE}: {k}")
    scale = float(softmax_scale if softmax_scale is not None else d_qk ** -0.5)
    split_kv = compile_kernel(mla_decode_split_kv, h_q, s_q, dtype, scale, k.block_H, k.block_N,
                              k.num_splits, k.stages, k.threads)
    chunk = chunk_blocks(max_seqlen, k.block_N, k.num_splits)
    q_rows, kv_rows = q.view(b, rows, d_qk), kv_cache.view(-1, d_qk)
    out = torch.empty(b, s_q, h_q, D_V, dtype=q.dtype, device=q.device)
    lse = torch.empty(b, h_q, s_q, dtype=torch.float32, device=q.device)
    if k.num_splits == 1:
        split_kv(q_rows, kv_rows, block_table, cache_seqlens, chunk, out.view(b, 1, rows, D_V), lse)
        return out, lse
    o_part = torch.empty(b, k.num_splits, rows, D_V, dtype=torch.float32, device=q.device)
    lse_part = torch.empty(b, k.num_splits, rows, dtype=torch.float32, device=q.device)
    split_kv(q_rows, kv_rows, block_table, cache_seqlens, chunk, o_part, lse_part)
    combine = compile_kernel(mla_decode_combine, h_q, s_q, dtype, k.num_splits)
    combine(o_part, lse_part, out.view(b, rows, D_V), lse)
    return out, lse
