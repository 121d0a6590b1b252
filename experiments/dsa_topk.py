"""DeepSeek-V3.2 top-k selection (k = 2048 per query): TileLang radix select vs torch.topk.

Input: fp32 logits [t, s], -inf outside each query's causal range (as the indexer writes them),
with the ranges themselves. Output: int32 indices [t, k] of the k largest finite logits per row,
in any order, -1 padded when a row has fewer than k finite entries.

The gate compares index SETS, not raw indices (`check`): a row passes when its indices are
distinct, point at finite logits, are all >= the row's k-th largest value (so any tie may be
chosen), and their count is min(k, finite entries). The reference gives that k-th value and count.

FLOPs: one comparison per visible logit (valid_pairs; a nominal figure, top-k is memory-bound).
Bytes = the visible logits read once (4 * valid_pairs) + indices written (4*t*k) + ranges.
"""
from __future__ import annotations

import math

from experiments import _dsa, upstream
from repro.measure.experiment import Backend, Experiment, needs_module

INDEX_LIMIT = 1 << 17  # the kernel's composite key holds positions < 131072


def cases(cfg) -> list[dict]:
    return _dsa.grid_cases(cfg, topk=int(cfg.get("topk", _dsa.TOPK)), dtype="fp32")


def validate_case(case: dict) -> None:
    _dsa.check_causal(case, max_kv=INDEX_LIMIT)


def make_inputs(case: dict, seed: int, device: str) -> dict:
    import torch

    g = _dsa.generator(seed, device)
    t, s = case["t"], case["s"]
    starts, ends = _dsa.causal_ranges(t, s, device)
    logits = torch.randn(t, s, generator=g, device=device)
    step = _dsa.query_chunk(t, s, elem_bytes=1)
    for r0 in range(0, t, step):  # mask in chunks: the bool mask of a whole 16k x 64k case is 1 GiB
        rows = slice(r0, min(r0 + step, t))
        logits[rows].masked_fill_(~_dsa.range_mask(starts[rows], ends[rows], 0, s), float("-inf"))
    out = torch.empty(t, case["topk"], device=device, dtype=torch.int32)
    return {"logits": logits, "starts": starts, "ends": ends, "out": out}


def reference(case: dict, inputs: dict):
    """(k-th largest finite value per row, or -inf when fewer than k; entries to select per row)."""
    import torch

    logits, k = inputs["logits"], case["topk"]
    kth, count = [], []
    for r0 in range(0, logits.shape[0], 1024):
        chunk = logits[r0:r0 + 1024]
        finite = torch.isfinite(chunk).sum(dim=1)
        values = torch.topk(chunk, min(k, chunk.shape[1]), dim=1).values
        last = values[:, -1] if chunk.shape[1] >= k else torch.full_like(values[:, 0], float("-inf"))
        kth.append(torch.where(finite >= k, last, float("-inf")).double())
        count.append(finite.clamp_max(k))
    return torch.cat(kth), torch.cat(count)


def check(case: dict, inputs: dict, out, ref) -> dict:
    """Order-free comparison of index sets, ties allowed (see the module docstring)."""
    import torch

    logits, (kth, count) = inputs["logits"], ref
    idx = out.long()
    chosen = idx != -1
    inside = (idx >= 0) & (idx < logits.shape[1])
    values = logits.gather(1, idx.clamp(0, logits.shape[1] - 1)).double()
    good_entry = ~chosen | (inside & torch.isfinite(values) & (values >= kth[:, None]))
    ordered = idx.sort(dim=1).values
    dupes = ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any(dim=1)
    bad_rows = ~good_entry.all(dim=1) | dupes | (chosen.sum(dim=1) != count)
    n_bad = int(bad_rows.sum())
    error = ""
    if n_bad:
        row = int(bad_rows.nonzero()[0])
        error = (f"{n_bad} row(s) with a wrong index set, first row {row}: {int(chosen[row].sum())} chosen "
                 f"(want {int(count[row])}), duplicates={bool(dupes[row])}, "
                 f"entries below the k-th value or invalid={int((~good_entry[row]).sum())}")
    return {"passed": n_bad == 0, "error": error, "rel_l2": 0.0 if n_bad == 0 else math.inf,
            "max_abs": float(n_bad)}


def flops(case: dict) -> float:
    return float(_dsa.valid_pairs(case))


def bytes_moved(case: dict) -> float:
    return 4.0 * _dsa.valid_pairs(case) + 4.0 * case["t"] * case["topk"] + 8.0 * case["t"]


def build_tilelang(case: dict, inputs: dict):
    from kernels.dsa_topk import dsa_topk

    logits, starts, ends, out = inputs["logits"], inputs["starts"], inputs["ends"], inputs["out"]
    dsa_topk(logits, starts, ends, case["topk"], out=out)  # compile outside the timed callable
    return lambda: dsa_topk(logits, starts, ends, case["topk"], out=out)


def torch_topk(logits, k: int):
    """torch.topk, with -inf picks (rows short of k finite entries) turned into -1 padding."""
    import torch

    values, idx = torch.topk(logits, min(k, logits.shape[1]), dim=1, sorted=False)
    idx = torch.where(torch.isfinite(values), idx, -1).to(torch.int32)
    if idx.shape[1] < k:
        idx = torch.nn.functional.pad(idx, (0, k - idx.shape[1]), value=-1)
    return idx


def build_torch(case: dict, inputs: dict):
    logits = inputs["logits"]
    return lambda: torch_topk(logits, case["topk"])


def upstream_supports(case: dict):
    """TileLang's published top-k selector (topk_selector.py) fills only as many slots as a row
    has positions and leaves the rest unwritten (no -1 padding): every query must see >= k."""
    if case["s"] - case["t"] + 1 < case["topk"]:
        return (f"the example leaves the slots of a row with fewer than topk={case['topk']} positions "
                f"unwritten (the first query here sees {case['s'] - case['t'] + 1})")
    return None


def build_tilelang_upstream(case: dict, inputs: dict):
    """TileLang's published top-k selector: a radix select over each row's [start, end) into our
    `out` [t, k] int32 (its tl_topk_impl's arguments), compiled here and called directly."""
    logits, starts, ends, out = inputs["logits"], inputs["starts"], inputs["ends"], inputs["out"]
    kernel = upstream.compiled(("dsa_topk", case["t"], case["s"], case["topk"]), lambda: upstream.example(
        upstream.TOPK).tl_topk_impl.compile(logits, out, starts, ends))

    def run():
        kernel(logits, out, starts, ends)
        return out

    return run


EXPERIMENT = Experiment(
    name="dsa_topk",
    cases=cases,
    make_inputs=make_inputs,
    reference=reference,
    flops=flops,
    bytes=bytes_moved,
    backends=[
        Backend("tilelang", build=build_tilelang, probe=needs_module("tilelang")),
        Backend("torch", build=build_torch, trusted=True),
        Backend("tilelang_upstream", build=build_tilelang_upstream, probe=upstream.upstream_probe(upstream.TOPK),
                dtypes=("fp32",), supports=upstream_supports),
    ],
    baseline="torch",
    check=check,
    validate_case=validate_case,
    flops_dtype=lambda case: "fp32",
    sources=("experiments/_dsa.py",),
)
