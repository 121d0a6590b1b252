"""What the three DeepSeek-V3.2 DSA experiments share: the case grid, causal ranges, input data.

Not an experiment itself (no config names it). A case is a prefill chunk or a decode step of
`t` query tokens at the end of a sequence of `s` tokens: query i sits at position s - t + i and
sees kv positions [0, s - t + i], i.e. start = 0 and end = s - t + i + 1.
"""
from __future__ import annotations

import contextlib

INDEX_HEADS, INDEX_DIM = 64, 128  # V3.2 lightning indexer
TOPK = 2048
MLA_HEADS, MLA_DQK, MLA_DV = 128, 576, 512
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def grid_cases(cfg, **fixed) -> list[dict]:
    """One case per [t, s] of `cfg.prefill` and `cfg.decode`, with the fixed parameters added."""
    out, seen = [], set()
    for mode in ("prefill", "decode"):
        for pair in cfg.get(mode) or []:
            if len(pair) != 2 or any(isinstance(x, bool) or not isinstance(x, int) or x <= 0 for x in pair):
                raise ValueError(f"{mode}: {list(pair)} is not [query_tokens, kv_tokens] with positive integers")
            if tuple(pair) in seen:
                raise ValueError(f"{mode}: {list(pair)} is listed twice")
            seen.add(tuple(pair))
            out.append({"t": pair[0], "s": pair[1], "mode": mode, **fixed})
    return out


def check_causal(case: dict, max_kv: int | None = None) -> None:
    if case["s"] < case["t"]:
        raise ValueError(f"kv tokens s={case['s']} < query tokens t={case['t']}: a query cannot see "
                         f"fewer tokens than the chunk it belongs to")
    if max_kv is not None and case["s"] > max_kv:
        raise ValueError(f"kv tokens s={case['s']} exceed {max_kv}, the most this operator indexes")


def causal_ranges(t: int, s: int, device):
    """int32 (starts, ends) of each query's visible kv positions, end exclusive."""
    import torch

    ends = torch.arange(s - t + 1, s + 1, device=device, dtype=torch.int32)
    return torch.zeros(t, device=device, dtype=torch.int32), ends


def valid_pairs(case: dict) -> int:
    """Sum over queries of the visible kv positions: t*(s-t) + t*(t+1)/2."""
    t, s = case["t"], case["s"]
    return t * (s - t) + t * (t + 1) // 2


def range_mask(starts, ends, lo: int, hi: int):
    """Bool [len(starts), hi-lo]: column j (position lo + j) lies in the query's [start, end)."""
    import torch

    pos = torch.arange(lo, hi, device=starts.device)
    return (pos[None, :] >= starts[:, None].long()) & (pos[None, :] < ends[:, None].long())


def query_chunk(t: int, row_elems: int, budget_bytes: int = 2**31, elem_bytes: int = 4) -> int:
    """Queries per chunk so that a [chunk, row_elems] temporary stays under the budget."""
    return max(1, min(t, budget_bytes // max(1, row_elems * elem_bytes)))


@contextlib.contextmanager
def exact_fp32():
    """fp32 matmuls in true fp32 for references (TF32 would round inputs to 10 mantissa bits)."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def generator(seed: int, device: str):
    import torch

    return torch.Generator(device=device).manual_seed(seed)


def per_token_fp8(x):
    """Per-row fp8 e4m3 quantization: (x / scale) in fp8 and the fp32 scales, amax -> 448."""
    import torch

    scale = x.float().abs().amax(dim=-1).clamp_min(1e-4) / FP8_MAX
    return (x.float() / scale[:, None]).to(torch.float8_e4m3fn), scale.float()


def random_topk_indices(t: int, s: int, topk: int, gen, device: str):
    """int32 [t, topk] of distinct visible positions per query, in random order, -1 padded.

    A query that sees p >= topk positions takes one uniform position from each of topk nearly
    equal integer slices of [0, p): distinct, spread over the whole history as a real top-k would be, and
    cheap at any size. One that sees fewer takes all of them.
    """
    import torch

    seen = torch.arange(s - t + 1, s + 1, device=device, dtype=torch.float64)[:, None]  # p per query
    slot = torch.arange(topk, device=device, dtype=torch.float64)[None, :]
    jitter = torch.rand(t, topk, generator=gen, device=device, dtype=torch.float64)
    lo, hi = torch.floor(slot * seen / topk), torch.floor((slot + 1) * seen / topk)  # integer slices
    spread = lo + torch.floor(jitter * (hi - lo))
    idx = torch.where(seen >= topk, spread, torch.where(slot < seen, slot, -1.0)).to(torch.int32)
    order = torch.rand(t, topk, generator=gen, device=device).argsort(dim=1)
    return idx.gather(1, order)
