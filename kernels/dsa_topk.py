"""Top-k selection per row (DeepSeek-V3.2 DSA: keep the 2048 best-scored kv positions per query).

Radix select on a 64-bit composite key: the float's order-preserving 32-bit image, then the
inverted position, so every valid entry has a distinct key and larger key = larger value, with
ties going to the smaller position. One CTA per row builds a histogram of the next radix digit
among the entries that still match the chosen prefix, finds the bin holding the k-th largest key
with a suffix sum, and stops as soon as a whole bin is taken. A last pass writes every entry whose
key is at or above the threshold. Without ties three digits settle it; ties cost more rounds.

Few long rows (decode: 4 rows of 128k) would keep only a few SMs busy, so there each row is cut
into `splits` slices, one CTA each selects the top k of its slice (their union holds the row's
top k), and a second launch of the same kernel selects the top k of those candidates, keyed by
their original positions, so ties fall exactly as in one pass.

Invalid entries (outside [start, end), -inf or NaN) are never selected; rows with fewer than k
valid entries are padded with -1. The order of indices within a row is unspecified.
"""

import functools

import tilelang.language as T

from kernels._compile import compile_kernel, sm_count

INDEX_BITS = 17  # positions < 2**17 = 131072 fit in the low part of the composite key
KEY_BITS = 32 + INDEX_BITS
# The builder places every barrier itself; the automatic pass would add one per loaded element.
PASS_CONFIGS = {"tl.disable_thread_storage_sync": True}


def _digit_shifts(radix_bits: int) -> list[int]:
    """Right-shift of each radix digit, most significant first (the last may be narrower)."""
    shifts, top = [], KEY_BITS
    while top > 0:
        top = max(top - radix_bits, 0)
        shifts.append(top)
    return shifts


def topk_selector(topk: int = 2048, threads: int = 1024, radix_bits: int = 11, items: int = 4,
                  splits: int = 1, gather: bool = False):
    """Builder: Logits fp32 [t, s], Pos int32 [t, s], Starts/Ends int32 [t] -> Indices int32
    [t, splits * topk] and Values fp32 [t, splits * topk] (outputs).

    splits > 1: `splits` CTAs per row, each selecting up to topk candidates of its share of the
    row's range (indices and values at Indices/Values[row, sp * topk:], -1 / -inf padded).
    gather: the merge of those candidates: Logits are candidate values, Pos their positions,
    the ranges are ignored, and the selected positions are written. Ties are broken by position
    in both, so the result is the single-CTA one. Otherwise Pos and Values are not read or written.
    """
    t, s = T.dynamic("t"), T.dynamic("s")
    bins = 1 << radix_bits
    shifts = _digit_shifts(radix_bits)
    max_index = (1 << INDEX_BITS) - 1
    neg_inf = -T.infinity("float32")

    def composite(x, j):
        bits = T.reinterpret(x, "uint32")
        key = T.if_then_else(x < 0, ~bits, bits | T.uint32(0x80000000))
        return (T.cast(key, "uint64") << INDEX_BITS) | T.cast(max_index - j, "uint64")

    def position(pos, row, j):  # the row position of entry j
        return pos[row, j] if gather else j

    @T.prim_func
    def main(Logits: T.Tensor([t, s], T.float32), Pos: T.Tensor([t, s], T.int32), Starts: T.Tensor([t], T.int32),
             Ends: T.Tensor([t], T.int32), Indices: T.Tensor([t, splits * topk], T.int32),
             Values: T.Tensor([t, splits * topk], T.float32)):
        with T.Kernel(t, splits, threads=threads) as (row, sp):
            tx = T.get_thread_binding()
            hist = T.alloc_shared([bins], "int32")
            need = T.alloc_shared([1], "int32")  # how many entries the current prefix must still supply
            done = T.alloc_shared([1], "int32")
            chosen = T.alloc_shared([1], "int32")  # the bin holding the k-th largest key
            cut = T.alloc_shared([1], "int32")  # shift at which the threshold was settled
            prefix = T.alloc_shared([1], "uint64")  # threshold key >> cut
            count = T.alloc_shared([1], "int32")
            vals = T.alloc_local([items], T.float32)  # `items` loads in flight per thread
            c = T.alloc_var("uint64")
            lo0, hi0 = T.max(Starts[row], 0), T.min(Ends[row], s)
            chunk = T.ceildiv(T.max(hi0 - lo0, 0), splits)  # this CTA's share of the range
            lo, hi = (0, s) if gather else (lo0 + sp * chunk, T.min(hi0, lo0 + sp * chunk + chunk))
            steps = T.ceildiv(T.max(hi - lo, 0), threads * items)
            if tx == 0:
                need[0] = topk
                done[0] = 0
                prefix[0] = T.uint64(0)
                cut[0] = 0
                count[0] = 0
            for r, shift in enumerate(shifts):
                T.sync_threads()
                if done[0] == 0:
                    width = (KEY_BITS if r == 0 else shifts[r - 1]) - shift
                    T.fill(hist, 0)
                    if tx == 0:
                        chosen[0] = 0  # stays 0 when fewer than `need` entries match
                    T.sync_threads()
                    for i in T.serial(steps):
                        for u in T.unroll(items):
                            j = lo + (i * items + u) * threads + tx
                            vals[u] = T.if_then_else(j < hi, Logits[row, T.min(j, s - 1)], neg_inf)
                        for u in T.unroll(items):
                            if vals[u] > neg_inf:  # also false for NaN
                                c = composite(vals[u], position(Pos, row, lo + (i * items + u) * threads + tx))
                                if (c >> (shift + width)) == prefix[0]:
                                    T.atomic_add(hist[T.cast((c >> shift) & T.uint64((1 << width) - 1), "int32")], 1)
                    T.sync_threads()
                    T.cumsum(hist, dim=0, reverse=True)  # hist[b] = entries in bins >= b
                    T.sync_threads()
                    for b in T.serial(T.ceildiv(bins, threads)):
                        bin_id = T.min(b * threads + tx, bins - 1)
                        above = T.if_then_else(bin_id + 1 < bins, hist[T.min(bin_id + 1, bins - 1)], 0)
                        if b * threads + tx < bins and hist[bin_id] >= need[0] and above < need[0]:
                            chosen[0] = bin_id
                    T.sync_threads()
                    if tx == 0:
                        bin_id = chosen[0]
                        above = T.if_then_else(bin_id + 1 < bins, hist[T.min(bin_id + 1, bins - 1)], 0)
                        prefix[0] = (prefix[0] << width) | T.cast(bin_id, "uint64")
                        cut[0] = shift
                        if hist[bin_id] <= need[0]:
                            done[0] = 1
                        need[0] = need[0] - above
            T.sync_threads()
            for i in T.serial(steps):
                for u in T.unroll(items):
                    j = lo + (i * items + u) * threads + tx
                    vals[u] = T.if_then_else(j < hi, Logits[row, T.min(j, s - 1)], neg_inf)
                for u in T.unroll(items):
                    j = lo + (i * items + u) * threads + tx
                    if vals[u] > neg_inf and (composite(vals[u], position(Pos, row, j)) >> cut[0]) >= prefix[0]:
                        pos = T.atomic_add(count[0], 1, return_prev=True)
                        if pos < topk:
                            Indices[row, sp * topk + pos] = position(Pos, row, j)
                            if splits > 1:
                                Values[row, sp * topk + pos] = vals[u]
            T.sync_threads()
            for p in T.serial(T.ceildiv(topk, threads)):
                if p * threads + tx < topk and p * threads + tx >= count[0]:
                    Indices[row, sp * topk + p * threads + tx] = -1
                    if splits > 1:
                        Values[row, sp * topk + p * threads + tx] = neg_inf

    return main


@functools.lru_cache(maxsize=None)
def topk_knobs(topk: int, t: int = 4096, s: int = 8192, sms: int = 132) -> dict:
    """Schedule for a shape: a full CTA per row; 11-bit digits keep the histogram at 8 KiB;
    four loads in flight per thread, since one is too few to cover HBM latency. Few long rows
    (decode) leave most SMs idle, so each row is then split over `splits` CTAs (a power of two,
    about sqrt(s / topk), which balances the slices against the merge of splits * topk
    candidates), when rows are at least 16 * topk long."""
    splits = 1
    while t * splits * 2 <= sms and (splits * 2) ** 2 * topk <= s and s >= 16 * topk:
        splits *= 2
    return {"threads": 1024, "radix_bits": 11, "items": 4, "splits": splits}


def validate(logits, starts, ends, topk: int) -> None:
    import torch

    if logits.dim() != 2 or logits.dtype != torch.float32:
        raise ValueError(f"logits must be fp32 [t, s], got {logits.dtype} {tuple(logits.shape)}")
    if logits.shape[1] > (1 << INDEX_BITS):
        raise ValueError(f"kv length {logits.shape[1]} exceeds {1 << INDEX_BITS} (the index field)")
    for name, v in (("starts", starts), ("ends", ends)):
        if v.dtype != torch.int32 or v.shape != (logits.shape[0],):
            raise ValueError(f"{name} must be int32 [t], got {v.dtype} {tuple(v.shape)}")
    if topk <= 0:
        raise ValueError(f"topk must be positive, got {topk}")


def dsa_topk(logits, starts, ends, topk: int = 2048, out=None, **knobs):
    """Indices int32 [t, topk] of the largest valid logits per row (-1 padded, unordered)."""
    import torch

    validate(logits, starts, ends, topk)
    t, s = logits.shape
    params = {**topk_knobs(topk, t, s, sm_count(logits.device)), **knobs}
    splits = params.pop("splits")
    if out is None:
        out = torch.empty(t, topk, dtype=torch.int32, device=logits.device)
    logits = logits.contiguous()
    if splits == 1:  # Pos and Values are unused: any tensors of the right shapes will do
        kernel = compile_kernel(topk_selector, topk, pass_configs=PASS_CONFIGS, **params)
        kernel(logits, logits.view(torch.int32), starts, ends, out, out.view(torch.float32))
        return out
    cand = torch.empty(t, splits * topk, dtype=torch.int32, device=logits.device)
    values = torch.empty(t, splits * topk, dtype=torch.float32, device=logits.device)
    select = compile_kernel(topk_selector, topk, pass_configs=PASS_CONFIGS, splits=splits, **params)
    merge = compile_kernel(topk_selector, topk, pass_configs=PASS_CONFIGS, gather=True, **params)
    select(logits, logits.view(torch.int32), starts, ends, cand, values)
    merge(values, cand, starts, ends, out, out.view(torch.float32))
    return out
