"""Top-k selection per row (DeepSeek-V3.2 DSA: keep the 2048 best-scored kv positions per query).

Radix select on a 64-bit composite key: the float's order-preserving 32-bit image, then the
inverted position, so every valid entry has a distinct key and larger key = larger value, with
ties going to the smaller position. One CTA per row builds a histogram of the next radix digit
among the entries that still match the chosen prefix, finds the bin holding the k-th largest key
with a suffix sum, and stops as soon as a whole bin is taken. A last pass writes every entry whose
key is at or above the threshold. Without ties three digits settle it; ties cost more rounds.

Invalid entries (outside [start, end), -inf or NaN) are never selected; rows with fewer than k
valid entries are padded with -1. The order of indices within a row is unspecified.
"""

import functools

import tilelang.language as T

from kernels._compile import compile_kernel

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


def topk_selector(topk: int = 2048, threads: int = 1024, radix_bits: int = 11, items: int = 4):
    """Builder: Logits fp32 [t, s], Starts/Ends int32 [t] -> Indices int32 [t, topk] (an output)."""
    t, s = T.dynamic("t"), T.dynamic("s")
    bins = 1 << radix_bits
    shifts = _digit_shifts(radix_bits)
    max_index = (1 << INDEX_BITS) - 1
    neg_inf = -T.infinity("float32")

    def composite(x, j):
        bits = T.reinterpret(x, "uint32")
        key = T.if_then_else(x < 0, ~bits, bits | T.uint32(0x80000000))
        return (T.cast(key, "uint64") << INDEX_BITS) | T.cast(max_index - j, "uint64")

    @T.prim_func
    def main(Logits: T.Tensor([t, s], T.float32), Starts: T.Tensor([t], T.int32),
             Ends: T.Tensor([t], T.int32), Indices: T.Tensor([t, topk], T.int32)):
        with T.Kernel(t, threads=threads) as row:
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
            lo = T.max(Starts[row], 0)
            hi = T.min(Ends[row], s)
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
                    for b in T.serial(T.ceildiv(bins, threads)):
                        if b * threads + tx < bins:
                            hist[b * threads + tx] = 0
                    if tx == 0:
                        chosen[0] = 0  # stays 0 when fewer than `need` entries match
                    T.sync_threads()
                    for i in T.serial(steps):
                        for u in T.unroll(items):
                            j = lo + (i * items + u) * threads + tx
                            vals[u] = T.if_then_else(j < hi, Logits[row, T.min(j, s - 1)], neg_inf)
                        for u in T.unroll(items):
                            if vals[u] > neg_inf:  # also false for NaN
                                c = composite(vals[u], lo + (i * items + u) * threads + tx)
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
                    if vals[u] > neg_inf and (composite(vals[u], j) >> cut[0]) >= prefix[0]:
                        pos = T.atomic_add(count[0], 1, return_prev=True)
                        if pos < topk:
                            Indices[row, pos] = j
            T.sync_threads()
            for p in T.serial(T.ceildiv(topk, threads)):
                if p * threads + tx < topk and p * threads + tx >= count[0]:
                    Indices[row, p * threads + tx] = -1

    return main


@functools.lru_cache(maxsize=None)
def topk_knobs(topk: int) -> dict:
    """Schedule for a given k: a full CTA per row; 11-bit digits keep the histogram at 8 KiB;
    four loads in flight per thread, since one is too few to cover HBM latency."""
    return {"threads": 1024, "radix_bits": 11, "items": 4}


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
    params = {**topk_knobs(topk), **knobs}
    kernel = compile_kernel(topk_selector, topk, pass_configs=PASS_CONFIGS, **params)
    if out is None:
        out = torch.empty(logits.shape[0], topk, dtype=torch.int32, device=logits.device)
    kernel(logits.contiguous(), starts, ends, out)
    return out
