"""On a GPU: every MLA decode backend passes the gate on varied lengths, lengths that are not a
multiple of the page block, shuffled block tables and s_q = 2, split and unsplit."""
from __future__ import annotations

import pytest

from experiments.mla_decode import EXPERIMENT
from repro.measure.gate import default_check

pytestmark = pytest.mark.gpu
TOL = {"fp16": {"rel_l2": 2e-3, "max_abs_rel": 1e-2}, "bf16": {"rel_l2": 1e-2, "max_abs_rel": 5e-2}}

CASES = [
    # (batch, h_q, s_q, seqlen, lengths, dtype): small, odd, varied; seqlen never a multiple of 64
    (4, 16, 1, 333, "varied", "fp16"),
    (5, 32, 2, 1000, "varied", "bf16"),
    (3, 64, 2, 65, "equal", "fp16"),
    (2, 128, 1, 4097, "equal", "bf16"),
    (6, 128, 2, 777, "varied", "fp16"),
    (4, 16, 2, 1025, "one_long", "bf16"),
]


def _case(batch, h_q, s_q, seqlen, lengths, dtype):
    return {"grid": "test", "batch": batch, "h_q": h_q, "s_q": s_q, "seqlen": seqlen,
            "lengths": lengths, "dtype": dtype}


def _assert_shuffled(inputs):
    import torch

    table, lens = inputs["block_table"], inputs["cache_seqlens"].tolist()
    used = torch.cat([table[i, :(n + 63) // 64] for i, n in enumerate(lens)])
    assert not torch.equal(used.cpu(), torch.arange(used.numel(), dtype=used.dtype))


def _gate(case, inputs, fn):
    import torch

    ref = EXPERIMENT.reference(case, inputs)
    out = fn()
    torch.cuda.synchronize()
    return default_check(out, ref, TOL[case["dtype"]])


@pytest.mark.parametrize("backend", ["tilelang", "triton", "flash_mla", "flashinfer"])
@pytest.mark.parametrize("params", CASES, ids=lambda p: "-".join(map(str, p)))
def test_backend_matches_reference(backend, params):
    b = EXPERIMENT.backend(backend)
    reason = b.probe()
    if reason:
        pytest.skip(reason)
    case = _case(*params)
    inputs = EXPERIMENT.make_inputs(case, 7, "cuda")
    _assert_shuffled(inputs)
    res = _gate(case, inputs, b.build(case, inputs))
    assert res["passed"], res["error"]


@pytest.mark.parametrize("impl", ["tilelang", "triton"])
@pytest.mark.parametrize("num_splits", [1, 2, 5])
@pytest.mark.parametrize("params", [CASES[1], CASES[2], CASES[4]], ids=lambda p: "-".join(map(str, p)))
def test_forced_splits_match_reference(impl, num_splits, params):
    """The split path, empty chunks included (5 splits of a 65-token cache)."""
    import torch

    case = _case(*params)
    inputs = EXPERIMENT.make_inputs(case, 11, "cuda")
    args = (inputs["q"], inputs["kv_cache"], inputs["block_table"], inputs["cache_seqlens"])
    rows = case["s_q"] * case["h_q"]
    if impl == "tilelang":
        from kernels.mla_decode import Knobs, mla_decode

        knobs = Knobs(block_H=min(64, rows), block_N=64, num_splits=num_splits, stages=2)
    else:
        from kernels.triton.mla_decode import TritonKnobs, mla_decode

        knobs = TritonKnobs(block_H=min(64, rows), block_N=32, num_splits=num_splits)
    out = mla_decode(*args, knobs=knobs)
    res = default_check(out, EXPERIMENT.reference(case, inputs), TOL[case["dtype"]])
    assert res["passed"], res["error"]


def test_outputs_are_fully_written():
    """Two calls on different data give different outputs everywhere (no stale rows)."""
    import torch

    from kernels.mla_decode import mla_decode

    case = _case(*CASES[4])
    a = EXPERIMENT.make_inputs(case, 1, "cuda")
    b = EXPERIMENT.make_inputs(case, 2, "cuda")
    out_a, _ = mla_decode(a["q"], a["kv_cache"], a["block_table"], a["cache_seqlens"])
    out_b, _ = mla_decode(b["q"], b["kv_cache"], b["block_table"], b["cache_seqlens"])
    assert torch.isfinite(out_a).all() and torch.isfinite(out_b).all()
    assert (out_a != out_b).float().mean() > 0.99
