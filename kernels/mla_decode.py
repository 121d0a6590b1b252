"""MLA decode (DeepSeek multi-head latent attention) over a paged KV cache, in TileLang.

One latent KV head (576 = 512 latent + 64 rope columns; V is the first 512) is shared by all
h_q query heads and all s_q new tokens, so the kernel folds (token, head) into one row axis of
s_q * h_q rows (row = token * h_q + head) and runs flash attention over the cache with those rows
as the M dimension of the tensor-core GEMMs.

Split-KV with a work plan: `mla_decode_plan` (run once per batch, outside the timed call, like
FlashMLA's metadata) cuts each sequence into pieces of nearly equal size, so that a long sequence
among short ones is spread over many CTAs while a batch of equal lengths keeps one piece per
sequence. CTA (g, p) attends row tile g over piece p; a sequence with one piece is written
straight to the output, a cut one leaves a partial O + log2-LSE per piece, merged by
`mla_decode_combine` (launched only when some sequence is cut).

Layouts (FlashMLA's): q [b, s_q, h_q, 576], kv_cache [num_pages, 64, 1, 576],
block_table int32 [b, max_pages], cache_seqlens int32 [b]; out [b, s_q, h_q, 512],
lse fp32 [b, h_q, s_q] (natural log). Query token i of s_q sees cache positions
< len - (s_q - 1 - i): the new tokens are already the last s_q entries of the cache.
"""

import math
from dataclasses import asdict, dataclass, replace

from kernels._compile import compile_kernel, default_target, sm_count as device_sms
from kernels.mla_common import (D_PE, D_QK, D_V, LN2, LOG2E, PAGE, PLAN_FIELDS, check_mla_inputs, check_mla_plan,
                                 online_softmax, padded_rows_io)
from kernels.mla_decode_combine import mla_decode_combine_wide
from kernels.mla_decode_pingpong import mla_decode_pingpong
from kernels.mla_decode_seesaw import mla_decode_seesaw
from kernels.mla_decode_ws import mla_decode_ws


@dataclass(frozen=True)
class Knobs:
    """Schedule. Rows go in tiles of min(64, s_q * h_q) (32 rows padded to 64 where the plan says
    so, below); threads=256 is two consumer warpgroups, each owning half of the S tile's keys and
    256 of the 512 V output columns (TileLang adds a TMA producer warpgroup on Hopper). block_N
    divides the 64-token page; stages is the K/V pipeline depth (TMA loads run that many blocks
    ahead of the GEMMs); ctas_per_sm sets how finely the plan cuts sequences (pieces x row tiles ~
    SMs x ctas_per_sm)."""

    block_N: int = 64
    stages: int = 2
    threads: int = 256
    ctas_per_sm: int = 1
    # pad_rows: 32 rows in a zero-padded 64-row tile (wgmma instead of mma); None: make_plan
    # pads when the plan's pieces are long (PAD_MIN_BLOCKS). balanced: the plan of the cap
    # that finishes first by the plan's cost model (the default plan when none beats it).
    # kernel: "split" (mla_decode_split_kv, below) or a warp-specialized kernel with its own
    # warpgroups and 64-row tiles (`threads` and `pad_rows` unused): "seesaw"
    # (kernels/mla_decode_seesaw.py), "ws" (kernels/mla_decode_ws.py) and "pingpong"
    # (kernels/mla_decode_pingpong.py, FlashMLA's schedule: 64-key blocks, 64-row tiles only);
    # "ws" a candidate. None (the default): on Hopper, make_plan takes
    # "seesaw" with four 32-key buffers for 32-row tiles whose pieces average `seesaw_from` 64-key
    # blocks or more (1.14-1.39x there on the H200, results/h200/ab/20261203T1742; 1.22-1.44x
    # from 16 blocks, 0.86-1.08x at 4, results/h200/ab/20261203T1925), "pingpong" for 64-row
    # tiles whose pieces average `pingpong_from` (1.09-1.19x from 128 blocks, 0.90-0.95x at 8-16,
    # results/h200/ab/20261203T1918); else "split". pingpong_from None: never.
    # combine: "serial" (mla_decode_combine, below) or "wide" (kernels/mla_decode_combine.py: the
    # pieces' statistics split over the threads, four O rows a step), a candidate.
    pad_rows: bool | None = None
    balanced: bool = True
    kernel: str | None = None
    combine: str = "serial"
    # lean_tail / staged_out: mla_decode_split_kv's (the last block's masking only where the
    # length ends inside it; the final output stored through shared memory).
    # Both on by default (together 1.07-1.33x on short and 1k-4k cases, none slower beyond noise
    # on the H200: results/h200/ab/20261203T1918).
    lean_tail: bool = True
    staged_out: bool = True
    seesaw_from: int = 12
    pingpong_from: int | None = 64

    @property
    def own_warpgroups(self) -> bool:
        """A warp-specialized kernel (64-row tiles, Hopper only), not the split kernel."""
        return self.kernel not in (None, "split")

    def builder_args(self) -> dict:
        if self.kernel == "pingpong":
            return {}
        if self.kernel in ("ws", "seesaw"):
            return {"block_N": self.block_N, "stages": self.stages}
        args = {k: v for k, v in asdict(self).items() if k not in ("ctas_per_sm", "balanced", "kernel", "combine",
                                                                  "seesaw_from", "pingpong_from")}
        return {**args, "pad_rows": bool(self.pad_rows)}  # None (decided by the plan) builds unpadded


def mla_decode_split_kv(h_q, s_q, dtype, sm_scale, block_N=64, stages=2, threads=256, tma_loads=True, pad_rows=False,
                        lean_tail=False, staged_out=False):
    """Attention of one (row tile, piece of a sequence) per CTA. tma_loads=False (targets without
    TMA, e.g. sm_80): the latent K/V tile is a guarded load that writes zeros past the length, as
    the non-warp-specialized pipeline planner refuses a second write to the tile. lean_tail: the
    last block is masked (s_q = 1) and its cache rows zeroed only when the length ends inside it.
    staged_out: a whole sequence's output goes through Q's shared memory (coalesced stores)."""
    import tilelang.language as T

    rows, accum, block_H = s_q * h_q, "float32", row_tile(s_q * h_q, pad_rows)
    padded = rows % block_H != 0  # e.g. 32 rows in a 64-row tile: rows past `rows` are zeros, not written
    scale = sm_scale * LOG2E  # scores go through exp2, so fold log2(e) into the scale
    softmax = online_softmax(block_H, block_N, scale)
    load_q_rows, store_rows = padded_rows_io(block_H, rows, h_q, scale)
    batch, num_tokens, max_pages, pieces, slots = T.dynamic("batch num_tokens max_pages pieces slots")

    @T.prim_func
    def split_kv(
        Q: T.Tensor([batch, rows, D_QK], dtype),
        KV: T.Tensor([num_tokens, D_QK], dtype),
        block_table: T.Tensor([batch, max_pages], "int32"),
        cache_seqlens: T.Tensor([batch], "int32"),
        plan: T.Tensor([pieces, PLAN_FIELDS], "int32"),
        seq_slot: T.Tensor([batch + 1], "int32"),  # sequence b's pieces: slots seq_slot[b]..[b+1]
        O: T.Tensor([batch, rows, D_V], dtype),
        LSE: T.Tensor([batch, h_q, s_q], accum),
        O_part: T.Tensor([slots, rows, D_V], accum),
        LSE_part: T.Tensor([slots, rows], accum),
    ):
        with T.Kernel(T.ceildiv(rows, block_H), pieces, threads=threads) as (g, p):
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

            b, lo, r0 = plan[p, 0], plan[p, 1], g * block_H
            seqlen = cache_seqlens[b]
            last = T.ceildiv(seqlen, block_N) - 1
            # lean_tail: the last block needs its cache rows zeroed only where the length ends
            # inside it, and (s_q = 1, no causal limit there) its scores masked only then too
            ragged = seqlen % block_N != 0 if lean_tail else True
            mask_last = ragged if s_q == 1 else True
            if padded:
                load_q_rows(Q, Q_s, Qpe_s, b, r0)
            else:
                T.copy(Q[b, r0:r0 + block_H, 0:D_V], Q_s)
                T.copy(Q[b, r0:r0 + block_H, D_V:D_QK], Qpe_s)
            T.fill(acc_o, 0)
            T.fill(l, 0)
            # A finite floor (not -inf) keeps exp2(m_prev - m) finite while a row has seen only
            # masked keys; masked scores stay -inf and contribute exactly zero.
            T.fill(m, -1e30)
            for it in T.Pipelined(plan[p, 2] - lo, num_stages=stages):
                tok = block_table[b, (lo + it) * block_N // PAGE] * PAGE + (lo + it) * block_N % PAGE
                if tma_loads:
                    T.copy(KV[tok:tok + block_N, 0:D_V], KV_s)
                else:
                    for j, d in T.Parallel(block_N, D_V):
                        KV_s[j, d] = T.if_then_else((lo + it) * block_N + j < seqlen, KV[tok + j, d], 0)
                T.copy(KV[tok:tok + block_N, D_V:D_QK], Kpe_s)
                T.gemm(Q_s, KV_s, S, transpose_B=True, policy=T.GemmWarpPolicy.FullCol, clear_accum=True)
                T.gemm(Qpe_s, Kpe_s, S, transpose_B=True, policy=T.GemmWarpPolicy.FullCol)
                if lo + it == last:  # length and causal limits (s_q <= 2) both fall in the last block
                    if mask_last:
                        for r, j in T.Parallel(block_H, block_N):
                            S[r, j] = T.if_then_else((lo + it) * block_N + j < seqlen - s_q + 1 + (r0 + r) // h_q,
                                                     S[r, j], -T.infinity(accum))
                    # Cache rows past the length may hold anything (NaN): zero them for P V. Only
                    # here, where the P tile's own barrier is, not before Q K^T (masked above).
                    if tma_loads:
                        if ragged:
                            for j, d in T.Parallel(block_N, D_V):
                                KV_s[j, d] = T.if_then_else((lo + it) * block_N + j < seqlen, KV_s[j, d], 0)
                softmax(S, m, m_prev, alpha, row_sum, l)
                T.copy(S, P_s)
                for r, d in T.Parallel(block_H, D_V):
                    acc_o[r, d] *= alpha[r]
                T.gemm(P_s, KV_s, acc_o, policy=T.GemmWarpPolicy.FullCol)

            # A row that saw no visible key (s_q = 2: the first token in a piece holding only the
            # last position) has l = 0: O stays 0 and its LSE is -inf.
            for r, d in T.Parallel(block_H, D_V):
                acc_o[r, d] /= T.max(l[r], 1e-30)
            if padded:  # only the rows that exist
                store_rows(acc_o, D_V, 0, l, m, b, r0, plan[p, 3], seq_slot[b + 1] - seq_slot[b] == 1,
                           O, LSE, O_part, LSE_part, True)
            elif seq_slot[b + 1] - seq_slot[b] == 1:  # the whole sequence is here: final output
                if staged_out:
                    T.copy(acc_o, Q_s)
                    T.copy(Q_s, O[b, r0:r0 + block_H, :])
                else:
                    T.copy(acc_o, O[b, r0:r0 + block_H, :])
                for r in T.Parallel(block_H):
                    LSE[b, (r0 + r) % h_q, (r0 + r) // h_q] = (T.log2(l[r]) + m[r] * scale) * LN2
            else:
                T.copy(acc_o, O_part[plan[p, 3], r0:r0 + block_H, :])
                for r in T.Parallel(block_H):
                    LSE_part[plan[p, 3], r0 + r] = T.log2(l[r]) + m[r] * scale

    return split_kv


def mla_decode_combine(h_q, s_q, dtype, threads=128):
    """Merge the pieces of each cut sequence by their log2-LSE into O and natural-log LSE."""
    import tilelang.language as T

    rows, accum = s_q * h_q, "float32"
    batch, slots = T.dynamic("batch slots")

    @T.prim_func
    def combine(
        seq_slot: T.Tensor([batch + 1], "int32"),
        O_part: T.Tensor([slots, rows, D_V], accum),
        LSE_part: T.Tensor([slots, rows], accum),
        O: T.Tensor([batch, rows, D_V], dtype),
        LSE: T.Tensor([batch, h_q, s_q], accum),
    ):
        with T.Kernel(rows, batch, threads=threads) as (r, b):
            acc = T.alloc_fragment([D_V], accum)
            lse_max = T.alloc_local([1], accum)
            total = T.alloc_local([1], accum)
            first, n = seq_slot[b], seq_slot[b + 1] - seq_slot[b]
            if n > 1:  # a sequence with one piece was written by the split kernel
                lse_max[0] = -T.infinity(accum)
                for s in T.serial(n):
                    lse_max[0] = T.max(lse_max[0], LSE_part[first + s, r])
                total[0] = 0
                for s in T.serial(n):
                    total[0] += T.exp2(LSE_part[first + s, r] - lse_max[0])
                T.clear(acc)
                for s in T.serial(n):
                    for j in T.Parallel(D_V):
                        acc[j] += O_part[first + s, r, j] * (T.exp2(LSE_part[first + s, r] - lse_max[0]) / total[0])
                for j in T.Parallel(D_V):
                    O[b, r, j] = acc[j]
                LSE[b, r % h_q, r // h_q] = (T.log2(total[0]) + lse_max[0]) * LN2

    return combine


PIECE_COST = 2  # a piece's fixed cost (Q load, pipeline fill, its output), in KV blocks
CUT_COST = 4  # more for a piece of a cut sequence: its fp32 partial written, read back and merged
PAD_MIN_BLOCKS = 32  # pad 32-row tiles to 64 rows when the plan's pieces average this many blocks


def _pieces(blocks, cap, near=False):
    """Each sequence in k equal parts on consecutive slots, k = ceil(n / cap) (none over the cap)
    or, near=True, the k nearest n / cap (a sequence near the cap stays whole):
    ([(seq, first, end, slot)] largest first, seq_slot)."""
    out, seq_slot = [], [0]
    for b, n in enumerate(blocks):
        size = math.ceil(n / (max(1, round(n / cap)) if near else math.ceil(n / cap)))
        out += [(b, lo, min(n, lo + size), seq_slot[-1] + j) for j, lo in enumerate(range(0, n, size))]
        seq_slot.append(seq_slot[-1] + math.ceil(n / size))
    return sorted(out, key=lambda piece: piece[1] - piece[2]), seq_slot  # stable: then batch order


def _makespan(pieces, seq_slot, ctas):
    """When the last of `ctas` CTA slots finishes, each taking the next piece when it frees."""
    import heapq

    free = [0] * max(1, ctas)
    for b, lo, hi, _ in pieces:
        cut = seq_slot[b + 1] - seq_slot[b] > 1
        heapq.heappush(free, heapq.heappop(free) + hi - lo + PIECE_COST + CUT_COST * cut)
    return max(free)


def mla_decode_plan(lengths, block_N, ctas, balanced=False):
    """Cut each sequence into pieces of about the mean work per CTA (`ctas` of them; never a
    piece under 4 blocks unless its sequence is), largest first, so the long work starts first.
    balanced=True: of that plan and a few caps (the mean and fractions of it, and no cut at all),
    the one whose pieces, dealt largest first to the CTA slot that frees first, finish first, a
    piece costing PIECE_COST blocks more than its keys and a piece of a cut sequence CUT_COST
    more again (ties: that plan, then fewer pieces). Returns (plan int32
    [pieces, 4]: sequence, first block, end block (exclusive), slot; seq_slot int32 [b + 1]:
    sequence b's pieces hold slots seq_slot[b] .. seq_slot[b + 1] - 1)."""
    import torch

    blocks = [max(1, math.ceil(int(n) / block_N)) for n in lengths]
    mean = sum(blocks) / max(1, ctas)
    plan, seq_slot = _pieces(blocks, max(4, math.ceil(mean)), near=True)
    if balanced:
        caps = sorted({max(4, math.ceil(mean / d)) for d in (1, 1.5, 2, 3, 4, 6, 8)} | {max(blocks)}, reverse=True)
        options = [(plan, seq_slot)] + [_pieces(blocks, cap) for cap in caps]
        plan, seq_slot = min(options, key=lambda p: (_makespan(p[0], p[1], ctas), p is not options[0], len(p[0])))
    return torch.tensor(plan, dtype=torch.int32).view(-1, PLAN_FIELDS), torch.tensor(seq_slot, dtype=torch.int32)


def default_knobs(h_q: int, s_q: int) -> Knobs:
    """The table used when no searched schedule is cached: 64-key blocks double-buffered (231 KB
    of shared memory at 64 rows, the most that fits)."""
    return Knobs()


# What the suite's schedule search times per (h_q, s_q, dtype): few on purpose (each compiles).
# 32-key blocks leave room for deeper K/V pipelines; two CTAs' worth of pieces per SM cut long
# sequences finer. Row tiles under 64 (h_q * s_q of 16 or 32) take 64-key blocks only: TileLang
# finds no warp partition (16 rows) or fragment layout (32 rows) for 32-key ones.
CANDIDATES = (Knobs(), Knobs(block_N=32, stages=3), Knobs(block_N=32, stages=4), Knobs(ctas_per_sm=2))


def candidates(h_q: int, s_q: int) -> tuple:
    return CANDIDATES if s_q * h_q >= 64 else tuple(k for k in CANDIDATES if k.block_N == 64)


def row_tile(rows: int, pad_rows: bool | None = False) -> int:
    """Rows per CTA: 64 (one wgmma M), or all of them when fewer (TileLang then uses mma); with
    pad_rows, more than 16 rows go in a zero-padded 64-row tile (wgmma on a half-empty tile)."""
    return 64 if pad_rows and rows > 16 else min(64, rows)


def target_pieces(h_q: int, s_q: int, knobs: Knobs, sm_count: int | None = None) -> int:
    """Pieces so that (row tiles x pieces) CTAs fill the SMs ctas_per_sm times."""
    tiles = -(-s_q * h_q // row_tile(s_q * h_q, knobs.pad_rows or knobs.own_warpgroups))
    return max(1, (sm_count or device_sms()) * max(1, knobs.ctas_per_sm) // tiles)


def builder_args(knobs: Knobs, target=None) -> dict:
    """The builder's arguments for the target (default: this device's): without TMA (before
    Hopper), guarded K/V loads in a one-stage pipeline (two stages do not lower there)."""
    target = default_target() if target is None else target
    if knobs.own_warpgroups or _hopper(target):
        return knobs.builder_args()
    return {**knobs.builder_args(), "tma_loads": False, "stages": 1}


KERNELS = {"split": mla_decode_split_kv, "ws": mla_decode_ws, "seesaw": mla_decode_seesaw, "pingpong": mla_decode_pingpong}


def _hopper(target) -> bool:
    """TMA, wgmma and warp specialization: a CUDA sm_90 target."""
    return isinstance(target, dict) and str(target.get("arch", "")).startswith("sm_9")


def compile_attention(h_q: int, s_q: int, dtype: str, scale: float, args: dict, kernel: str | None = "split"):
    """The attention kernel of a schedule (Knobs.kernel: split-KV or a warp-specialized one),
    compiled (cached): args are builder_args(knobs), dtype "bfloat16" or "float16"."""
    return compile_kernel(KERNELS[kernel or "split"], h_q, s_q, dtype, float(scale), **args)


def _torch_dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class Plan:
    """A batch's work plan and workspace (FlashMLA's metadata): made once, reused by every call
    with the same lengths and schedule."""

    pieces: object  # int32 [pieces, 4] on the device
    seq_slot: object  # int32 [b + 1]
    cut: bool  # some sequence has several pieces: the combine runs
    knobs: Knobs
    o_part: object  # fp32 [slots, rows, 512]
    lse_part: object  # fp32 [slots, rows]
    args: dict  # the builder's schedule arguments for this device (builder_args), chosen once


def _auto_kernel(k: Knobs, pieces, rows: int) -> Knobs:
    """Knobs with pad_rows None: the kernel (where Knobs.kernel is None, on Hopper) and the 32-row
    padding chosen by the plan's mean piece length in 64-key blocks."""
    blocks = float((pieces[:, 2] - pieces[:, 1]).float().mean()) * k.block_N / 64
    short_tile = row_tile(rows, True) != row_tile(rows)  # 32 rows: mma, or wgmma on a padded tile
    if k.kernel is None and _hopper(default_target()):
        if short_tile and blocks >= k.seesaw_from:
            return replace(k, kernel="seesaw", block_N=32, stages=4, pad_rows=False)
        if rows % 64 == 0 and k.block_N == PAGE and k.pingpong_from is not None and blocks >= k.pingpong_from:
            return replace(k, kernel="pingpong", pad_rows=False)
    return replace(k, pad_rows=bool(short_tile and blocks >= PAD_MIN_BLOCKS))


def make_plan(cache_seqlens, h_q: int, s_q: int, knobs: Knobs | None = None, ctas: int | None = None) -> Plan:
    """The plan for these lengths (ctas: pieces wanted, default from the knobs and the SM count)."""
    import torch

    k = knobs or default_knobs(h_q, s_q)
    knobs_block_N = k.block_N
    pieces, seq_slot = mla_decode_plan(cache_seqlens.cpu().tolist(), k.block_N, ctas or target_pieces(h_q, s_q, k),
                                       balanced=k.balanced)
    if k.pad_rows is None:  # the kernel and the padding follow the pieces' mean length
        k = _auto_kernel(k, pieces, s_q * h_q)
        if k.block_N != knobs_block_N:  # the seesaw kernel's 32-key blocks
            pieces, seq_slot = mla_decode_plan(cache_seqlens.cpu().tolist(), k.block_N,
                                               ctas or target_pieces(h_q, s_q, k), balanced=k.balanced)
    k = replace(k, kernel=k.kernel or "split")
    if k.combine not in ("serial", "wide"):
        raise ValueError(f"combine {k.combine!r}: 'serial' or 'wide'")
    if k.kernel not in KERNELS or k.kernel == "pingpong" and ((s_q * h_q) % 64 or k.block_N != PAGE):
        raise ValueError(f"kernel {k.kernel!r}: one of {sorted(KERNELS)}; 'pingpong' needs h_q * s_q a multiple "
                         f"of 64 and block_N {PAGE}")
    slots, dev = int(seq_slot[-1]), cache_seqlens.device
    cut = slots > cache_seqlens.shape[0]
    slots = slots if cut else 1  # nothing cut: no partial outputs, a one-slot placeholder
    return Plan(pieces.to(dev), seq_slot.to(dev), cut, k,
                torch.empty(slots, s_q * h_q, D_V, dtype=torch.float32, device=dev),
                torch.empty(slots, s_q * h_q, dtype=torch.float32, device=dev), builder_args(k))


def mla_decode(q, kv_cache, block_table, cache_seqlens, *, softmax_scale=None, knobs=None,
               plan: Plan | None = None, check: bool = True):
    """Paged MLA decode; returns (out [b, s_q, h_q, 512], lse fp32 [b, h_q, s_q], natural log).

    plan: from make_plan (its knobs win over `knobs`); made here when absent. check=True
    validates the inputs and the plan (device syncs); the timed path passes check=False with a
    plan made once beforehand, so a call only launches one kernel (two when a sequence is cut).
    """
    import torch

    b, s_q, h_q, d_qk = q.shape
    if check:
        check_mla_inputs(q, kv_cache, block_table, cache_seqlens)
    if plan is None:
        plan = make_plan(cache_seqlens, h_q, s_q, knobs)
    k, rows = plan.knobs, s_q * h_q
    if check:
        check_mla_plan(plan.pieces, plan.seq_slot, cache_seqlens, k.block_N)
        if PAGE % k.block_N:
            raise ValueError(f"block_N must divide the page size {PAGE}: {k}")
        if plan.cut and tuple(plan.o_part.shape) != (int(plan.seq_slot[-1]), rows, D_V):
            raise ValueError(f"plan workspace {tuple(plan.o_part.shape)} was made for another shape")
    dtype = _torch_dtype_name(q.dtype)
    scale = float(softmax_scale if softmax_scale is not None else d_qk ** -0.5)
    split_kv = compile_attention(h_q, s_q, dtype, scale, plan.args, k.kernel)
    out = torch.empty(b, s_q, h_q, D_V, dtype=q.dtype, device=q.device)
    lse = torch.empty(b, h_q, s_q, dtype=torch.float32, device=q.device)
    out_rows = out.view(b, rows, D_V)
    split_kv(q.view(b, rows, d_qk), kv_cache.view(-1, d_qk), block_table, cache_seqlens, plan.pieces, plan.seq_slot,
             out_rows, lse, plan.o_part, plan.lse_part)
    if plan.cut:
        combine = mla_decode_combine_wide if k.combine == "wide" else mla_decode_combine
        compile_kernel(combine, h_q, s_q, dtype)(plan.seq_slot, plan.o_part, plan.lse_part, out_rows, lse)
    return out, lse
