"""MLA decode over a paged KV cache in Triton: split-KV flash attention plus an LSE combine.

Same contract as kernels/mla_decode.py (FlashMLA's layouts): q [b, s_q, h_q, 576],
kv_cache [num_pages, 64, 1, 576] (V = first 512 columns), block_table int32 [b, max_pages],
cache_seqlens int32 [b] -> out [b, s_q, h_q, 512], lse fp32 [b, h_q, s_q] (natural log).
(token, head) pairs are folded into rows = token * h_q + head, all sharing the one KV head.
"""
import functools
import math
from dataclasses import dataclass

from kernels.mla_common import D_PE, D_V, PAGE, check_mla_inputs, chunk_blocks, pick_num_splits

LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class TritonKnobs:
    block_H: int = 64
    block_N: int = 32
    num_splits: int = 1
    num_warps: int = 8
    num_stages: int = 2


def _kernels():
    """The kernels are defined on first use, so importing this module never needs Triton."""
    return _split_kv_kernel(), _combine_kernel()


@functools.lru_cache(maxsize=None)
def _split_kv_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def split_kv(Q, KV, block_table, cache_seqlens, O, LSE, chunk, max_pages, h_q, s_q,
                 num_splits, scale, ROWS: tl.constexpr, BLOCK_H: tl.constexpr,
                 BLOCK_N: tl.constexpr, DV: tl.constexpr, DPE: tl.constexpr,
                 PAGE_SIZE: tl.constexpr, FINAL: tl.constexpr):
        g, b, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        D: tl.constexpr = DV + DPE
        rows = g * BLOCK_H + tl.arange(0, BLOCK_H)
        cols, pe_cols = tl.arange(0, DV), DV + tl.arange(0, DPE)
        q_base = Q + b.to(tl.int64) * ROWS * D + rows[:, None] * D
        q = tl.load(q_base + cols[None, :])
        q_pe = tl.load(q_base + pe_cols[None, :])
        seqlen = tl.load(cache_seqlens + b)
        n_blocks = tl.cdiv(seqlen, BLOCK_N)
        first = split * chunk
        last = tl.minimum(first + chunk, n_blocks)
        # query token t of s_q sees positions < seqlen - (s_q - 1 - t)
        visible = seqlen - s_q + 1 + rows // h_q
        m = tl.full([BLOCK_H], -1e30, tl.float32)  # finite floor: rows with only masked keys stay NaN-free
        l = tl.zeros([BLOCK_H], tl.float32)
        acc = tl.zeros([BLOCK_H, DV], tl.float32)
        offs_n = tl.arange(0, BLOCK_N)
        for blk in range(first, last):
            pos = blk * BLOCK_N + offs_n
            page = tl.load(block_table + b.to(tl.int64) * max_pages + blk * BLOCK_N // PAGE_SIZE)
            tok = page.to(tl.int64) * PAGE_SIZE + pos % PAGE_SIZE
            in_len = pos < seqlen
            kv = tl.load(KV + tok[:, None] * D + cols[None, :], mask=in_len[:, None], other=0.0)
            k_pe = tl.load(KV + tok[:, None] * D + pe_cols[None, :], mask=in_len[:, None], other=0.0)
            s = tl.dot(q, tl.trans(kv)) + tl.dot(q_pe, tl.trans(k_pe))
            s = tl.where(pos[None, :] < visible[:, None], s * (scale * 1.4426950408889634), float("-inf"))
            m_new = tl.maximum(m, tl.max(s, 1))
            alpha = tl.exp2(m - m_new)
            p = tl.exp2(s - m_new[:, None])
            l = l * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(kv.dtype), kv)
            m = m_new
        acc = acc / tl.maximum(l, 1e-30)[:, None]  # l = 0: no visible key here, O 0, LSE -inf
        lse2 = tl.log2(l) + m
        if FINAL:
            o_ptr = O + b.to(tl.int64) * ROWS * DV + rows[:, None] * DV + cols[None, :]
            tl.store(o_ptr, acc.to(O.dtype.element_ty))
            tl.store(LSE + b * ROWS + (rows % h_q) * s_q + rows // h_q, lse2 * 0.6931471805599453)
        else:
            part = (b.to(tl.int64) * num_splits + split) * ROWS
            if last > first:  # the combine skips empty chunks
                tl.store(O + (part + rows[:, None]) * DV + cols[None, :], acc)
            tl.store(LSE + part + rows, lse2)

    return split_kv


@functools.lru_cache(maxsize=None)
def _combine_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def combine(O_part, LSE_part, O, LSE, h_q, s_q, num_splits, ROWS: tl.constexpr,
                DV: tl.constexpr, SPLITS: tl.constexpr):
        r, b = tl.program_id(0), tl.program_id(1)
        splits = tl.arange(0, SPLITS)
        part = (b.to(tl.int64) * num_splits + splits) * ROWS + r
        lse = tl.load(LSE_part + part, mask=splits < num_splits, other=float("-inf"))
        lse_max = tl.max(lse, 0)
        w = tl.exp2(lse - lse_max)
        total = tl.sum(w, 0)
        cols = tl.arange(0, DV)
        live = lse > float("-inf")  # empty chunks wrote no output
        o = tl.load(O_part + part[:, None] * DV + cols[None, :], mask=live[:, None], other=0.0)
        out = tl.sum(o * (w / total)[:, None], 0)
        tl.store(O + (b.to(tl.int64) * ROWS + r) * DV + cols, out.to(O.dtype.element_ty))
        tl.store(LSE + b * ROWS + (r % h_q) * s_q + r // h_q,
                 (tl.log2(total) + lse_max) * 0.6931471805599453)

    return combine


@functools.lru_cache(maxsize=512)
def choose_triton_knobs(batch: int, h_q: int, s_q: int, max_seqlen: int,
                        total_seqlen: int | None = None, sm_count: int = 132) -> TritonKnobs:
    """64-row tiles (fewer for 16/32 rows) against 32-key blocks: the 64x512 fp32 accumulator
    already takes most of the registers of 8 warps."""
    rows = s_q * h_q
    block_H, block_N = min(64, rows), 32
    total = total_seqlen if total_seqlen is not None else batch * max_seqlen
    splits = pick_num_splits(batch, rows // block_H, math.ceil(max_seqlen / block_N),
                             math.ceil(total / block_N), sm_count, min_chunk=8)
    return TritonKnobs(block_H=block_H, block_N=block_N, num_splits=splits)


def mla_decode(q, kv_cache, block_table, cache_seqlens, *, softmax_scale=None, knobs=None,
               max_seqlen: int | None = None, check: bool = True):
    """Paged MLA decode in Triton; see the module docstring for layouts."""
    import torch

    if check:
        max_seqlen = check_mla_inputs(q, kv_cache, block_table, cache_seqlens)
    elif max_seqlen is None:
        max_seqlen = int(cache_seqlens.max())
    b, s_q, h_q, d_qk = q.shape
    rows = s_q * h_q
    sm = torch.cuda.get_device_properties(q.device).multi_processor_count if q.is_cuda else 132
    k = knobs or choose_triton_knobs(b, h_q, s_q, max_seqlen, sm_count=sm)
    scale = float(softmax_scale if softmax_scale is not None else d_qk ** -0.5)
    split_kv, combine = _kernels()
    chunk = chunk_blocks(max_seqlen, k.block_N, k.num_splits)
    out = torch.empty(b, s_q, h_q, D_V, dtype=q.dtype, device=q.device)
    lse = torch.empty(b, h_q, s_q, dtype=torch.float32, device=q.device)
    final = k.num_splits == 1
    o_dst = out if final else torch.empty(b, k.num_splits, rows, D_V, dtype=torch.float32, device=q.device)
    lse_dst = lse if final else torch.empty(b, k.num_splits, rows, dtype=torch.float32, device=q.device)
    split_kv[(rows // k.block_H, b, k.num_splits)](
        q, kv_cache, block_table, cache_seqlens, o_dst, lse_dst, chunk, block_table.shape[1],
        h_q, s_q, k.num_splits, scale, ROWS=rows, BLOCK_H=k.block_H, BLOCK_N=k.block_N, DV=D_V,
        DPE=D_PE, PAGE_SIZE=PAGE, FINAL=final, num_warps=k.num_warps, num_stages=k.num_stages)
    if not final:
        combine[(rows, b)](o_dst, lse_dst, out, lse, h_q, s_q, k.num_splits, ROWS=rows, DV=D_V,
                           SPLITS=max(2, 1 << (k.num_splits - 1).bit_length()), num_warps=4)
    return out, lse
