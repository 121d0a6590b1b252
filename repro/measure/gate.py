"""The correctness gate: poisoned outputs, fresh random inputs, a higher-precision reference."""
from __future__ import annotations

import math
from typing import Any, Mapping

INT_POISON = -(2**31) + 7  # written into integer output buffers: an index no kernel produces


def poison_outputs(inputs: Mapping[str, Any]) -> None:
    """Fill every output buffer (keys starting with "out") so that unwritten elements fail the check."""
    import torch

    for key, value in inputs.items():
        if key.startswith("out") and isinstance(value, torch.Tensor):
            if value.is_floating_point():
                value.fill_(float("nan"))
            else:
                value.fill_(INT_POISON)


def poison_allocator(nbytes: int, device: str = "cuda") -> None:
    """Fill then free a block of the caching allocator, so outputs a kernel allocates itself
    (torch.empty inside a wrapper) start as NaN (0xFF bytes) rather than as stale valid data."""
    import torch

    if nbytes > 0:
        block = torch.empty(int(nbytes), dtype=torch.uint8, device=device)
        block.fill_(0xFF)
        del block


def as_tuple(x) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


class NotReturned:
    """Stands in a backend's outputs for one its implementation does not compute (a published
    kernel that returns no LSE): `default_check` compares the other outputs and says which was
    not compared, and why, in the row's `error` column. At least one output is still compared;
    a plain None (a forgotten return) is never accepted in its place."""

    def __init__(self, why: str):
        self.why = why

    def __repr__(self) -> str:
        return f"NotReturned({self.why!r})"


def compare(out, ref, tol: Mapping[str, float]) -> dict:
    """Error figures of one output tensor against its reference, and whether they pass.

    rel_l2 = ||out - ref|| / ||ref|| over finite reference entries; max_abs is the largest
    elementwise error, judged relative to max|ref|. Infinite reference entries (masked
    logits, say) must be matched exactly; any NaN in the output fails.
    """
    import torch

    if tuple(out.shape) != tuple(ref.shape):
        return {"passed": False, "error": f"shape {tuple(out.shape)} != reference {tuple(ref.shape)}",
                "rel_l2": math.inf, "max_abs": math.inf}
    o = out.detach().to(torch.float64)
    r = ref.detach().to(device=o.device, dtype=torch.float64)
    if torch.isnan(o).any():
        n = int(torch.isnan(o).sum())
        return {"passed": False, "error": f"{n} NaN element(s) (unwritten or invalid)",
                "rel_l2": math.inf, "max_abs": math.inf}
    finite = torch.isfinite(r)
    if not torch.equal(o[~finite], r[~finite]):
        return {"passed": False, "error": "infinite reference entries not reproduced",
                "rel_l2": math.inf, "max_abs": math.inf}
    if not torch.isfinite(o[finite]).all():
        return {"passed": False, "error": "inf where the reference is finite", "rel_l2": math.inf,
                "max_abs": math.inf}
    diff = (o - r)[finite]
    ref_f = r[finite]
    ref_norm = float(torch.linalg.vector_norm(ref_f)) or 1.0
    rel_l2 = float(torch.linalg.vector_norm(diff)) / ref_norm
    max_abs = float(diff.abs().max()) if diff.numel() else 0.0
    scale = float(ref_f.abs().max()) if ref_f.numel() else 1.0
    passed = rel_l2 <= tol["rel_l2"] and max_abs <= tol["max_abs_rel"] * max(scale, 1e-30)
    error = "" if passed else f"rel_l2 {rel_l2:.2e} (tol {tol['rel_l2']:.0e}), max_abs {max_abs:.2e} " \
                              f"(tol {tol['max_abs_rel']:.0e} x max|ref| {scale:.2e})"
    return {"passed": passed, "error": error, "rel_l2": rel_l2, "max_abs": max_abs}


def default_check(out, ref, tol: Mapping[str, float]) -> dict:
    """Compare every output against its reference; report the worst figures."""
    outs, refs = as_tuple(out), as_tuple(ref)
    if len(outs) != len(refs):
        return {"passed": False, "error": f"{len(outs)} outputs, reference has {len(refs)}",
                "rel_l2": math.inf, "max_abs": math.inf}
    pairs = [(i, o, r) for i, (o, r) in enumerate(zip(outs, refs)) if not isinstance(o, NotReturned)]
    if not pairs:
        return {"passed": False, "error": "no output to compare", "rel_l2": math.inf, "max_abs": math.inf}
    results = [(i, compare(o, r, tol)) for i, o, r in pairs]
    worst = {"rel_l2": max(r["rel_l2"] for _, r in results), "max_abs": max(r["max_abs"] for _, r in results)}
    failed = [f"output {i}: {r['error']}" for i, r in results if not r["passed"]]
    note = "; ".join(f"output {i} not compared: {o.why}" for i, o in enumerate(outs) if isinstance(o, NotReturned))
    return {"passed": not failed, "error": "; ".join(failed), "note": note, **worst}
