"""On a GPU: every MLA decode backend passes the gate on skewed lengths (one long sequence among
short ones, lengths 1..64, lengths just over a page), varied lengths, permuted block tables, a
NaN-filled cache past every length, s_q = 2, h_q 16 to 128; every TileLang schedule and extreme
work plans too; a causal off-by-one fails the gate."""
from __future__ import annotations

import pytest

from experiments.mla_decode import EXPERIMENT
from repro.measure.gate import default_check

pytestmark = pytest.mark.gpu
# the experiment's gate: configs/bench/default.yaml, bf16 tightened by configs/experiment/mla_decode.yaml
TOL = {"fp16": {"rel_l2": 2e-3, "max_abs_rel": 1e-2}, "bf16": {"rel_l2": 3e-3, "max_abs_rel": 5e-2}}

CASES = [
    # (batch, h_q, s_q, seqlen, lengths, dtype)
    (4, 16, 1, 333, "varied", "fp16"),
    (5, 32, 2, 1000, "varied", "bf16"),
    (3, 64, 2, 65, "equal", "fp16"),
    (2, 128, 1, 4097, "equal", "bf16"),
    (6, 128, 2, 777, "varied", "fp16"),
    (4, 16, 2, 1025, "one_long", "bf16"),
    (32, 128, 1, 1024, "one_long", "bf16"),
    (64, 128, 2, 64, "short", "bf16"),
    (64, 16, 2, 64, "short", "fp16"),
    (48, 64, 1, 64, "over_page", "bf16"),
    (48, 128, 2, 64, "match_over_page", "bf16"),
]
IDS = ["-".join(map(str, p)) for p in CASES]


def _case(batch, h_q, s_q, seqlen, lengths, dtype):
    return {"grid": "test", "batch": batch, "h_q": h_q, "s_q": s_q, "seqlen": seqlen,
            "lengths": lengths, "dtype": dtype}


def _check_inputs(inputs):
    """Block tables permuted, the cache past every length NaN (so over-reads fail the gate)."""
    import torch

    table, lens = inputs["block_table"], inputs["cache_seqlens"].tolist()
    used = torch.cat([table[i, :(n + 63) // 64] for i, n in enumerate(lens)])
    assert not torch.equal(used.cpu(), torch.arange(used.numel(), dtype=used.dtype))
    assert inputs["kv_cache"].isnan().any()


def _args(inputs):
    return inputs["q"], inputs["kv_cache"], inputs["block_table"], inputs["cache_seqlens"]


@pytest.mark.parametrize("backend", ["tilelang", "triton", "flash_mla", "flashinfer"])
@pytest.mark.parametrize("params", CASES, ids=IDS)
def test_backend_matches_reference(backend, params):
    import torch

    b = EXPERIMENT.backend(backend)
    reason = b.probe()
    if reason:
        pytest.skip(reason)
    case = _case(*params)
    inputs = EXPERIMENT.make_inputs(case, 7, "cuda")
    _check_inputs(inputs)
    ref = EXPERIMENT.reference(case, inputs)
    out = b.build(case, inputs)()
    torch.cuda.synchronize()
    res = default_check(out, ref, TOL[case["dtype"]])
    assert res["passed"], res["error"]


@pytest.mark.parametrize("knob_index", range(4))
@pytest.mark.parametrize("params", [CASES[1], CASES[6], CASES[7], CASES[8]], ids=[IDS[i] for i in (1, 6, 7, 8)])
def test_every_schedule_matches_reference(knob_index, params):
    from kernels.mla_decode import candidates, make_plan, mla_decode

    case = _case(*params)
    knobs = candidates(case["h_q"], case["s_q"])[knob_index % len(candidates(case["h_q"], case["s_q"]))]
    inputs = EXPERIMENT.make_inputs(case, 11, "cuda")
    plan = make_plan(inputs["cache_seqlens"], case["h_q"], case["s_q"], knobs)
    out = mla_decode(*_args(inputs), plan=plan)
    res = default_check(out, EXPERIMENT.reference(case, inputs), TOL[case["dtype"]])
    assert res["passed"], res["error"]


@pytest.mark.parametrize("ctas", [1, 3, 500])
@pytest.mark.parametrize("params", [CASES[1], CASES[2], CASES[5], CASES[7]], ids=[IDS[i] for i in (1, 2, 5, 7)])
def test_extreme_plans_match_reference(ctas, params):
    """Every sequence whole; few pieces; the finest cut (4-block pieces, pieces holding only the
    last position), each through the kernel and, when cut, the combine."""
    from kernels.mla_decode import Knobs, make_plan, mla_decode

    case = _case(*params)
    inputs = EXPERIMENT.make_inputs(case, 5, "cuda")
    plan = make_plan(inputs["cache_seqlens"], case["h_q"], case["s_q"], Knobs(), ctas=ctas)
    out = mla_decode(*_args(inputs), plan=plan)
    res = default_check(out, EXPERIMENT.reference(case, inputs), TOL[case["dtype"]])
    assert res["passed"], res["error"]


@pytest.mark.parametrize("params", [CASES[7], CASES[8]], ids=[IDS[7], IDS[8]])
def test_causal_off_by_one_fails_the_gate(params):
    """The kernel passes against the right reference and fails against one whose queries see one
    key more or fewer: the gate, at these lengths, would catch a kernel with that bug."""
    from kernels.mla_common import mla_decode_reference

    case = _case(*params)
    inputs = EXPERIMENT.make_inputs(case, 2, "cuda")
    out = EXPERIMENT.backend("tilelang").build(case, inputs)()
    assert default_check(out, EXPERIMENT.reference(case, inputs), TOL[case["dtype"]])["passed"]
    for shift in (1, -1):
        wrong = mla_decode_reference(*_args(inputs), causal_shift=shift)
        assert not default_check(out, wrong, TOL[case["dtype"]])["passed"], shift


def test_outputs_are_fully_written():
    """Two calls on different data give different outputs everywhere (no stale rows)."""
    import torch

    from kernels.mla_decode import mla_decode

    case = _case(*CASES[6])
    a = EXPERIMENT.make_inputs(case, 1, "cuda")
    b = EXPERIMENT.make_inputs(case, 2, "cuda")
    out_a, _ = mla_decode(*_args(a))
    out_b, _ = mla_decode(*_args(b))
    assert torch.isfinite(out_a).all() and torch.isfinite(out_b).all()
    assert (out_a != out_b).float().mean() > 0.99


# The schedules the default chooses between per plan (always padded; the replaced default:
# unpadded, the mean-cap plan) and the warp-specialized kernels (seesaw: 64- and 32-key blocks;
# pingpong: FlashMLA's schedule, 64-row tiles only).
CANDIDATE_KNOBS = {"padded": {"pad_rows": True}, "replaced": {"pad_rows": False, "balanced": False}, "ws": {"kernel": "ws"},
                   "seesaw": {"kernel": "seesaw"}, "seesaw32": {"kernel": "seesaw", "block_N": 32, "stages": 4},
                   "pingpong": {"kernel": "pingpong"}, "wide_combine": {"combine": "wide"},
                   "lean": {"lean_tail": True, "staged_out": True}}


@pytest.mark.parametrize("candidate", list(CANDIDATE_KNOBS))
@pytest.mark.parametrize("params", CASES, ids=IDS)
def test_candidates_match_reference(candidate, params):
    """The schedules of tools/ab_candidates.py pass the same gate on every case above: padded
    32-row tiles, the replaced default, the warp-specialized kernels (padded rows at
    h_q 16, cut sequences through the combine, odd block counts, NaN past every length)."""
    import torch

    from kernels.mla_decode import Knobs, make_plan, mla_decode

    case = _case(*params)
    inputs = EXPERIMENT.make_inputs(case, 13, "cuda")
    knobs = Knobs(**CANDIDATE_KNOBS[candidate])
    if candidate == "pingpong" and case["h_q"] * case["s_q"] % 64:
        with pytest.raises(ValueError, match="multiple of 64"):  # 64-row tiles only: refused, not padded
            make_plan(inputs["cache_seqlens"], case["h_q"], case["s_q"], knobs)
        return
    plan = make_plan(inputs["cache_seqlens"], case["h_q"], case["s_q"], knobs)
    out = mla_decode(*_args(inputs), plan=plan)
    torch.cuda.synchronize()
    res = default_check(out, EXPERIMENT.reference(case, inputs), TOL[case["dtype"]])
    assert res["passed"], res["error"]
