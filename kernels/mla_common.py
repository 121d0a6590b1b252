"""Input checks and split planning shared by the TileLang and Triton MLA decode kernels.

Both kernels take FlashMLA's layouts: q [b, s_q, h_q, 576], kv_cache [num_pages, 64, 1, 576],
block_table int32 [b, max_pages], cache_seqlens int32 [b].
"""
import math

D_V = 512
D_PE = 64
PAGE = 64
D_QK = D_V + D_PE
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
PLAN_FIELDS = 4  # per piece: sequence, first KV block, end block (exclusive), slot of its partial O
MAX_SPLITS = 64


def check_mla_inputs(q, kv_cache, block_table, cache_seqlens, *, d_v: int = D_V) -> int:
    """Raise ValueError on anything the kernels cannot do; return the longest cache length.

    Reading the lengths costs one device sync, so callers do it once (at build), not per call.
    """
    if q.dim() != 4 or kv_cache.dim() != 4:
        raise ValueError(f"q must be [b, s_q, h_q, d_qk] and kv_cache [pages, {PAGE}, 1, d_qk]; "
                         f"got {tuple(q.shape)} and {tuple(kv_cache.shape)}")
    b, s_q, h_q, d_qk = q.shape
    if d_qk != d_v + D_PE or d_v != D_V:
        raise ValueError(f"only d_qk = d_v + {D_PE} with d_v = {D_V} is supported "
                         f"(got d_qk={d_qk}, d_v={d_v})")
    if kv_cache.shape[1] != PAGE or kv_cache.shape[2] != 1 or kv_cache.shape[3] != d_qk:
        raise ValueError(f"kv_cache must be [pages, {PAGE}, 1, {d_qk}] (one latent head, page "
                         f"block {PAGE}); got {tuple(kv_cache.shape)}")
    if q.dtype != kv_cache.dtype or str(q.dtype) not in ("torch.float16", "torch.bfloat16"):
        raise ValueError(f"q and kv_cache must share one dtype, fp16 or bf16; got {q.dtype} "
                         f"and {kv_cache.dtype}")
    if s_q not in (1, 2) or h_q not in (16, 32, 64, 128):
        raise ValueError(f"supported: s_q in (1, 2), h_q in (16, 32, 64, 128); got {s_q}, {h_q}")
    if block_table.dim() != 2 or block_table.shape[0] != b or str(block_table.dtype) != "torch.int32":
        raise ValueError(f"block_table must be int32 [{b}, max_pages]; got {block_table.dtype} "
                         f"{tuple(block_table.shape)}")
    if tuple(cache_seqlens.shape) != (b,) or str(cache_seqlens.dtype) != "torch.int32":
        raise ValueError(f"cache_seqlens must be int32 [{b}]; got {cache_seqlens.dtype} "
                         f"{tuple(cache_seqlens.shape)}")
    for name, t in (("q", q), ("kv_cache", kv_cache), ("block_table", block_table),
                    ("cache_seqlens", cache_seqlens)):
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    return _check_lengths(kv_cache, block_table, cache_seqlens, s_q)


def _check_lengths(kv_cache, block_table, cache_seqlens, s_q: int) -> int:
    import torch

    lens = cache_seqlens.cpu()
    lo, hi = int(lens.min()), int(lens.max())
    capacity = kv_cache.shape[0] * PAGE
    if lo < s_q:
        raise ValueError(f"every cache length must hold its {s_q} new token(s); shortest is {lo}")
    if hi > capacity:
        raise ValueError(f"cache length {hi} is longer than the cache ({capacity} tokens)")
    if hi > block_table.shape[1] * PAGE:
        raise ValueError(f"block table too short: {block_table.shape[1]} pages of {PAGE} hold "
                         f"{block_table.shape[1] * PAGE} tokens, a sequence has {hi}")
    pages = block_table.cpu()
    used = [pages[i, : math.ceil(int(n) / PAGE)] for i, n in enumerate(lens)]
    used = [p for p in used if p.numel()]
    if used:
        flat = torch.cat(used)
        if int(flat.min()) < 0 or int(flat.max()) >= kv_cache.shape[0]:
            raise ValueError(f"block table names pages outside [0, {kv_cache.shape[0]})")
    return hi


def check_mla_plan(plan, seq_slot, cache_seqlens, block_N: int) -> None:
    """Raise ValueError unless the work plan covers every KV block of every sequence exactly once.

    plan int32 [pieces, 4]: (sequence, first block, end block (exclusive), slot); seq_slot int32
    [b + 1]: sequence b's pieces use slots seq_slot[b] .. seq_slot[b + 1] - 1, one each, and
    slot order is block order.
    """
    b = int(cache_seqlens.shape[0])
    if plan.dim() != 2 or plan.shape[1] != 4 or str(plan.dtype) != "torch.int32" or not plan.is_contiguous():
        raise ValueError(f"plan must be contiguous int32 [pieces, 4]; got {plan.dtype} {tuple(plan.shape)}")
    if tuple(seq_slot.shape) != (b + 1,) or str(seq_slot.dtype) != "torch.int32":
        raise ValueError(f"seq_slot must be int32 [{b + 1}]; got {seq_slot.dtype} {tuple(seq_slot.shape)}")
    if plan.device != cache_seqlens.device or seq_slot.device != cache_seqlens.device:
        raise ValueError("plan and seq_slot must be on the lengths' device")
    blocks = [max(1, math.ceil(int(n) / block_N)) for n in cache_seqlens.cpu()]
    slots, covered = seq_slot.cpu().tolist(), [{} for _ in range(b)]
    if slots[0] != 0:
        raise ValueError("seq_slot must start at 0")
    for p, (s, lo, hi, slot) in enumerate(plan.cpu().tolist()):
        if not (0 <= s < b and 0 <= lo < hi <= blocks[s]):
            raise ValueError(f"plan piece {p} {(s, lo, hi)} is outside the batch's blocks")
        if not slots[s] <= slot < slots[s + 1] or slot in covered[s]:
            raise ValueError(f"plan piece {p} of sequence {s} has slot {slot} (its slots: {slots[s]}..{slots[s + 1] - 1})")
        covered[s][slot] = (lo, hi)
    for s, found in enumerate(covered):
        pieces = [found[k] for k in sorted(found)]
        ends = [0] + [hi for _, hi in pieces]
        if [lo for lo, _ in pieces] != ends[:-1] or ends[-1] != blocks[s] or len(pieces) != slots[s + 1] - slots[s]:
            raise ValueError(f"plan does not cover sequence {s}'s {blocks[s]} blocks once, in order: {pieces}")


def chunk_blocks(max_seqlen: int, block_N: int, num_splits: int) -> int:
    """KV blocks per split so that num_splits splits cover the longest sequence."""
    return max(1, math.ceil(math.ceil(max_seqlen / block_N) / num_splits))


def pick_num_splits(batch: int, groups: int, max_blocks: int, total_blocks: int,
                    sm_count: int, min_chunk: int = 4) -> int:
    """Splits so the grid holds ~2 CTAs of real work per SM, each chunk >= min_chunk blocks.

    groups = row blocks per sequence; total_blocks = KV blocks summed over sequences. One split
    length serves every sequence, so a lone long sequence (the adversarial case) is cut into
    many chunks while the short ones keep one.
    """
    mean_blocks = total_blocks / max(1, batch)
    if batch * groups >= 0.9 * sm_count and max_blocks <= 1.5 * mean_blocks:
        return 1  # one wave or more of even work: a combine pass would only cost bandwidth
    chunk = max(min_chunk, math.ceil(total_blocks * groups / (2 * sm_count)))
    return int(min(MAX_SPLITS, max(1, math.ceil(max_blocks / chunk))))


def mla_decode_reference(q, kv_cache, block_table, cache_seqlens, softmax_scale=None,
                         d_v: int = D_V, causal_shift: int = 0):
    """fp32 attention over the gathered pages; returns (out fp32 [b, s_q, h_q, d_v],
    lse fp32 [b, h_q, s_q]). Sequences go in groups so the gathered keys stay near 1 GiB.
    Cache entries past a length are never read into the result (they may be NaN).
    causal_shift != 0 lets each query see that many more (or fewer) keys: a deliberately wrong
    reference, for tests that the gate catches an off-by-one."""
    import torch

    b, s_q, h_q, d = q.shape
    rows = s_q * h_q
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    lens = cache_seqlens.long()
    longest = int(lens.max())
    n_pages = math.ceil(longest / PAGE)
    step = max(1, (1 << 28) // (longest * d))
    token = torch.arange(rows, device=q.device) // h_q
    pos = torch.arange(longest, device=q.device)
    outs, lses = [], []
    for start in range(0, b, step):
        pages = block_table[start:start + step, :n_pages].long().clamp_min(0)
        keys = kv_cache[pages].reshape(pages.shape[0], n_pages * PAGE, d)[:, :longest].float()
        n = lens[start:start + step, None]
        keys = keys.masked_fill((pos[None, :] >= n)[..., None], 0.0)
        scores = q[start:start + step].float().reshape(-1, rows, d) @ keys.transpose(1, 2) * scale
        visible = n - s_q + 1 + token[None, :] + causal_shift
        scores.masked_fill_(pos[None, None, :] >= visible[:, :, None], float("-inf"))
        lses.append(torch.logsumexp(scores, dim=-1).view(-1, s_q, h_q).transpose(1, 2))
        outs.append((torch.softmax(scores, dim=-1) @ keys[..., :d_v]).view(-1, s_q, h_q, d_v))
    return torch.cat(outs), torch.cat(lses).contiguous()


def online_softmax(block_H: int, block_N: int, scale: float):
    """The online-softmax step of a score tile, as a TileLang macro: the running row max m (m_prev
    keeps the last one), the rescale factor alpha of what was summed before, S turned into
    exp2(S * scale - m * scale) in place, and the running row sum l updated with it."""
    import tilelang.language as T

    @T.macro
    def step(S, m, m_prev, alpha, row_sum, l):
        T.copy(m, m_prev)
        T.reduce_max(S, m, dim=1, clear=False)
        for r in T.Parallel(block_H):
            alpha[r] = T.exp2((m_prev[r] - m[r]) * scale)
        for r, j in T.Parallel(block_H, block_N):
            S[r, j] = T.exp2(S[r, j] * scale - m[r] * scale)
        T.reduce_sum(S, row_sum, dim=1)
        for r in T.Parallel(block_H):
            l[r] = l[r] * alpha[r] + row_sum[r]

    return step


def last_block_masks(block_H: int, block_N: int, h_q: int, s_q: int):
    """TileLang macros for a sequence's last K/V block (keys first .. first + block_N - 1):
    `mask_scores` sets the scores of keys past the length, or past a query token's causal limit
    (s_q = 2: token i sees positions < length - (s_q - 1 - i)), to -inf; `zero_rows` zeroes the
    cache rows past the length in stage `st` of a [stages, block_N, >= 512] K/V buffer (they may
    hold NaN, and 0 x NaN is NaN in P V)."""
    import tilelang.language as T

    @T.macro
    def mask_scores(S, first, seqlen, r0):
        for r, j in T.Parallel(block_H, block_N):
            S[r, j] = T.if_then_else(first + j < seqlen - s_q + 1 + T.min((r0 + r) // h_q, s_q - 1),
                                     S[r, j], -T.infinity("float32"))

    @T.macro
    def zero_rows(KV_s, st, first, seqlen):
        for j, d in T.Parallel(block_N, D_V):
            KV_s[st, j, d] = T.if_then_else(first + j < seqlen, KV_s[st, j, d], 0)

    return mask_scores, zero_rows


def padded_rows_io(block_H: int, rows: int, h_q: int, scale: float):
    """TileLang macros for a row tile that may run past the `rows` query rows (a zero-padded
    tile): `load_q` copies Q's rows into Q_s / Qpe_s with zeros past the last row; `store`
    writes columns c0.. of the normalized O tile (the final output of a whole sequence, else
    the piece's partial) and, with with_lse, the rows' LSE, for existing rows only."""
    import tilelang.language as T

    @T.macro
    def load_q(Q, Q_s, Qpe_s, b, r0):
        for r, d in T.Parallel(block_H, D_V):
            Q_s[r, d] = T.if_then_else(r0 + r < rows, Q[b, r0 + r, d], 0)
        for r, d in T.Parallel(block_H, D_PE):
            Qpe_s[r, d] = T.if_then_else(r0 + r < rows, Q[b, r0 + r, D_V + d], 0)

    @T.macro
    def store(acc, cols, c0, l, m, b, r0, slot, whole, O, LSE, O_part, LSE_part, with_lse):
        for r, d in T.Parallel(block_H, cols):
            if r0 + r < rows:
                if whole:
                    O[b, r0 + r, c0 + d] = acc[r, d]
                else:
                    O_part[slot, r0 + r, c0 + d] = acc[r, d]
        if with_lse:
            for r in T.Parallel(block_H):
                if r0 + r < rows:
                    if whole:
                        LSE[b, (r0 + r) % h_q, (r0 + r) // h_q] = (T.log2(l[r]) + m[r] * scale) * LN2
                    else:
                        LSE_part[slot, r0 + r] = T.log2(l[r]) + m[r] * scale

    return load_q, store
