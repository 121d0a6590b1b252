"""CPU checks of MLA decode: the TileLang schedules compile for Hopper, the work plan covers every
KV block once and balances skewed batches, plan + per-piece attention + LSE merge equals the fp32
reference, the reference matches a naive loop and ignores NaN past each length, the bf16 gate
catches a causal off-by-one, the Triton kernel matches under Triton's interpreter, bad input is
refused with a clear message."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from kernels import mla_decode as tl_mla
from kernels._compile import HOPPER, compile_kernel, ptxas_usage
from kernels.mla_common import check_mla_inputs, check_mla_plan, mla_decode_reference

ROOT = Path(__file__).resolve().parent.parent


def paged_inputs(lens, s_q=1, h_q=16, dtype=torch.float16, seed=0, nan_tail=False):
    """q, a cache with shuffled pages, the block table and lengths, on the CPU."""
    g = torch.Generator().manual_seed(seed)
    pages = [math.ceil(n / 64) for n in lens]
    perm = torch.randperm(sum(pages), generator=g).int()
    table = torch.zeros(len(lens), max(pages), dtype=torch.int32)
    start = 0
    for i, n in enumerate(pages):
        table[i, :n] = perm[start:start + n]
        start += n
    q = torch.randn(len(lens), s_q, h_q, 576, generator=g).to(dtype)
    kv = torch.randn(sum(pages), 64, 1, 576, generator=g).to(dtype)
    if nan_tail:
        for i, n in enumerate(lens):
            kv[int(table[i, pages[i] - 1]), n % 64 or 64:] = float("nan")
    return q, kv, table, torch.tensor(lens, dtype=torch.int32)


def naive_decode(q, kv, table, lens):
    """One sequence, one query token at a time, straight from the definition."""
    b, s_q, h_q, d = q.shape
    out = torch.zeros(b, s_q, h_q, 512, dtype=torch.float64)
    lse = torch.zeros(b, h_q, s_q, dtype=torch.float64)
    for i in range(b):
        n = int(lens[i])
        keys = torch.cat([kv[int(p), :, 0] for p in table[i, :math.ceil(n / 64)]])[:n].double()
        for t in range(s_q):
            visible = n - (s_q - 1 - t)
            s = q[i, t].double() @ keys[:visible].T / math.sqrt(d)
            lse[i, :, t] = torch.logsumexp(s, dim=-1)
            out[i, t] = torch.softmax(s, dim=-1) @ keys[:visible, :512]
    return out, lse


@pytest.mark.parametrize("s_q,h_q,lens", [(1, 16, [1, 64, 200]), (2, 32, [2, 65, 129, 64]), (2, 16, [3000])])
def test_reference_matches_naive_loop_and_ignores_nan_past_lengths(s_q, h_q, lens):
    q, kv, table, cl = paged_inputs(lens, s_q, h_q, nan_tail=True)
    out, lse = mla_decode_reference(q, kv, table, cl)
    want_out, want_lse = naive_decode(q, kv, table, cl)
    assert out.shape == (len(lens), s_q, h_q, 512) and lse.shape == (len(lens), h_q, s_q)
    torch.testing.assert_close(out.double(), want_out, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(lse.double(), want_lse, atol=2e-5, rtol=1e-5)


def _pieces(plan, seq_slot, lens, block_N):
    """(sequence, first block, end block, slot) of every piece, as the split kernel takes them."""
    return [tuple(row) for row in plan.tolist()]


LENGTH_SETS = [[65536] + [1024] * 31, [1] * 7 + [64, 65, 129], [4097] * 5, [3, 70000, 2, 900, 64 * 7 + 1],
               [8192] * 128]


@pytest.mark.parametrize("lens", LENGTH_SETS, ids=["one_long", "short", "equal", "mixed", "flashmla"])
@pytest.mark.parametrize("block_N,ctas", [(64, 132), (32, 66), (64, 1), (64, 1000)])
@pytest.mark.parametrize("balanced", [False, True])
def test_plan_covers_every_block_once(lens, block_N, ctas, balanced):
    plan, seq_slot = tl_mla.mla_decode_plan(lens, block_N, ctas, balanced=balanced)
    check_mla_plan(plan, seq_slot, torch.tensor(lens, dtype=torch.int32), block_N)
    assert plan.shape[1] == tl_mla.PLAN_FIELDS and int(seq_slot[-1]) == plan.shape[0]
    sizes = [hi - lo for _, lo, hi, _ in plan.tolist()]
    assert sizes == sorted(sizes, reverse=True)  # largest pieces first


def test_plan_spreads_one_long_sequence_and_keeps_equal_ones_whole():
    """The 64k sequence among 31 of 1k is cut into pieces no larger than the short sequences'
    16 blocks, so no CTA walks it alone; 128 equal sequences of 8k stay one piece each (no
    combine pass); a batch too small to fill the GPU is cut to fill it."""
    plan, seq_slot = tl_mla.mla_decode_plan([65536] + [1024] * 31, 64, 132)
    sizes = [hi - lo for _, lo, hi, _ in plan.tolist()]
    assert int(seq_slot[1]) > 50 and max(sizes) <= 16
    plan, seq_slot = tl_mla.mla_decode_plan([8192] * 128, 64, 66)
    assert plan.shape[0] == 128 and int(seq_slot[-1]) == 128
    plan, _ = tl_mla.mla_decode_plan([8192] * 4, 64, 132)
    assert plan.shape[0] >= 100


def test_balanced_plan_finishes_no_later_by_its_model_and_keeps_equal_batches_whole():
    """FlashMLA's varied lengths (normal, sd half the mean) at 8k over 132 slots: pieces of about
    the mean work leave one CTA walking up to 1.5x the mean; the balanced plan's simulated finish
    is within 15% of the mean work (and never later than the default's). Equal lengths stay one
    piece per sequence either way (no combine)."""
    import experiments.mla_decode as exp

    case = {"grid": "t", "batch": 128, "h_q": 16, "s_q": 1, "seqlen": 8192, "lengths": "varied", "dtype": "bf16"}
    blocks = [-(-n // 64) for n in exp.case_lengths(case)]
    finish = {}
    for b in (False, True):
        plan, seq_slot = tl_mla.mla_decode_plan(exp.case_lengths(case), 64, 132, balanced=b)
        finish[b] = tl_mla._makespan([tuple(r) for r in plan.tolist()], seq_slot.tolist(), 132)
    fixed = tl_mla.PIECE_COST + tl_mla.CUT_COST
    assert finish[True] <= finish[False] and finish[True] <= 1.15 * sum(blocks) / 132 + fixed
    assert finish[False] > 1.3 * sum(blocks) / 132
    plan, seq_slot = tl_mla.mla_decode_plan([8192] * 128, 64, 132, balanced=True)
    assert plan.shape[0] == 128 and int(seq_slot[-1]) == 128


@pytest.mark.parametrize("lengths, h_q, want_default", [
    ("one_long", 128, True), ("one_long", 16, True),  # one 64k among 1k: measured 0.79x cut finer
    ("short", 128, True),  # 37 sequences of 1..300 tokens: measured 0.91x cut finer
    ("varied", 16, False), ("varied", 32, False),  # 8k varied: measured 1.29-1.37x balanced
])
def test_balanced_plan_keeps_the_default_plan_where_cutting_finer_measured_slower(lengths, h_q, want_default):
    """The cases of the H200 A/B where the balanced plan (without a cost for cut sequences) ran
    slower than the default plan, and two where it ran faster."""
    import experiments.mla_decode as exp

    batch, seqlen = {"one_long": (32, 1024), "short": (37, 300), "varied": (128, 8192)}[lengths]
    lens = exp.case_lengths({"grid": "t", "batch": batch, "h_q": h_q, "s_q": 1, "seqlen": seqlen,
                             "lengths": lengths, "dtype": "bf16"})
    ctas = tl_mla.target_pieces(h_q, 1, tl_mla.Knobs(), 132)
    default, balanced = (tl_mla.mla_decode_plan(lens, 64, ctas, balanced=b)[0].tolist() for b in (False, True))
    assert (balanced == default) == want_default


def test_make_plan_pads_32_row_tiles_only_for_long_pieces():
    no_seesaw = tl_mla.Knobs(kernel="split")  # Knobs() takes the seesaw kernel where it would pad (below)
    long = tl_mla.make_plan(torch.tensor([8192] * 128, dtype=torch.int32), 16, 2, no_seesaw)
    short = tl_mla.make_plan(torch.tensor([65] * 128, dtype=torch.int32), 16, 2)
    wide = tl_mla.make_plan(torch.tensor([8192] * 128, dtype=torch.int32), 128, 1)
    assert long.knobs.pad_rows and long.args["pad_rows"]
    assert short.knobs.pad_rows is False and not short.args["pad_rows"]
    assert wide.knobs.pad_rows is False  # 64-row tiles: nothing to pad
    assert tl_mla.make_plan(torch.tensor([65] * 128, dtype=torch.int32), 16, 2, tl_mla.Knobs(pad_rows=True)).knobs.pad_rows


def test_make_plan_flags_a_cut_batch_and_sizes_its_workspace():
    lens = torch.tensor([4096] * 8, dtype=torch.int32)
    cut = tl_mla.make_plan(lens, 128, 1)
    assert cut.cut and tuple(cut.o_part.shape) == (int(cut.seq_slot[-1]), 128, 512)
    whole = tl_mla.make_plan(torch.tensor([4096] * 256, dtype=torch.int32), 128, 1)
    assert not whole.cut and whole.o_part.shape[0] == 1


def test_plan_validation_rejects_broken_plans():
    lens = torch.tensor([200, 64, 65], dtype=torch.int32)
    plan, seq_slot = tl_mla.mla_decode_plan(lens.tolist(), 64, 6)
    check_mla_plan(plan, seq_slot, lens, 64)
    for row, field, delta in ((0, 1, 1), (0, 2, -1), (0, 3, 1), (0, 0, 1)):
        bad = plan.clone()
        bad[row, field] += delta
        with pytest.raises(ValueError):
            check_mla_plan(bad, seq_slot, lens, 64)
    with pytest.raises(ValueError):
        check_mla_plan(plan[1:].contiguous(), seq_slot, lens, 64)  # a piece missing
    with pytest.raises(ValueError):
        check_mla_plan(plan.long(), seq_slot, lens, 64)
    with pytest.raises(ValueError):
        check_mla_plan(plan, seq_slot[:-1].contiguous(), lens, 64)


@pytest.mark.parametrize("s_q,h_q,lens,ctas", [(1, 16, [1, 64, 5000, 65], 7), (2, 32, [2, 700, 130], 5)])
@pytest.mark.parametrize("balanced", [False, True])
def test_plan_pieces_merged_by_lse_equal_the_reference(s_q, h_q, lens, ctas, balanced):
    """What the two kernels compute, in fp64 on the CPU: attention over each piece of the plan
    (a piece holding only masked keys for the first of s_q = 2 tokens gives LSE -inf), then the
    LSE-weighted merge of each sequence's pieces."""
    q, kv, table, cl = paged_inputs(lens, s_q, h_q, torch.float32, nan_tail=True)
    plan, seq_slot = tl_mla.mla_decode_plan(lens, 64, ctas, balanced=balanced)
    assert int(seq_slot[-1]) > len(lens)  # some sequence is cut
    want, want_lse = naive_decode(q, kv, table, cl)
    parts_o, parts_lse = {}, {}
    for s, lo, hi, slot in _pieces(plan, seq_slot, lens, 64):
        n = lens[s]
        keys = torch.cat([kv[int(p), :, 0] for p in table[s, :math.ceil(n / 64)]]).double()
        for t in range(s_q):
            end = min(hi * 64, n - (s_q - 1 - t))
            scores = q[s, t].double() @ keys[lo * 64:max(end, lo * 64)].T / math.sqrt(576)
            lse = torch.logsumexp(scores, -1) if scores.shape[-1] else torch.full((h_q,), -math.inf, dtype=torch.float64)
            o = torch.softmax(scores, -1) @ keys[lo * 64:max(end, lo * 64), :512] if scores.shape[-1] \
                else torch.zeros(h_q, 512, dtype=torch.float64)
            parts_o[slot, t], parts_lse[slot, t] = o, lse
    for s in range(len(lens)):
        for t in range(s_q):
            slots = range(int(seq_slot[s]), int(seq_slot[s + 1]))
            lse = torch.stack([parts_lse[k, t] for k in slots])
            total = torch.logsumexp(lse, 0)
            out = sum(parts_o[k, t] * torch.exp(parts_lse[k, t] - total)[:, None] for k in slots)
            torch.testing.assert_close(out, want[s, t], atol=1e-9, rtol=1e-9)
            torch.testing.assert_close(total, want_lse[s, :, t], atol=1e-9, rtol=1e-9)


def _bf16_tolerance() -> dict:
    from omegaconf import OmegaConf

    bench = OmegaConf.load(ROOT / "configs" / "bench" / "default.yaml").tolerance.bf16
    own = OmegaConf.load(ROOT / "configs" / "experiment" / "mla_decode.yaml").tolerance.bf16
    return {**OmegaConf.to_container(bench), **OmegaConf.to_container(own)}


def test_bf16_gate_catches_a_causal_off_by_one():
    """At lengths 1..64 with s_q = 2, letting each token see one key too many (or too few) fails
    the experiment's bf16 gate, while the right answer rounded to bf16 passes it."""
    from experiments.mla_decode import EXPERIMENT
    from repro.measure.gate import default_check

    case = {"grid": "test", "batch": 32, "h_q": 16, "s_q": 2, "seqlen": 64, "lengths": "short", "dtype": "bf16"}
    inputs = EXPERIMENT.make_inputs(case, 3, "cpu")
    args = (inputs["q"], inputs["kv_cache"], inputs["block_table"], inputs["cache_seqlens"])
    tol = _bf16_tolerance()
    assert tol["rel_l2"] <= 3e-3
    right = mla_decode_reference(*args)
    rounded = (right[0].bfloat16(), right[1])
    assert default_check(rounded, right, tol)["passed"]
    for shift in (1, -1):
        wrong = mla_decode_reference(*args, causal_shift=shift)
        wrong = (wrong[0].bfloat16(), torch.where(torch.isfinite(wrong[1]), wrong[1], right[1]))
        assert not default_check(wrong, right, tol)["passed"], shift


def test_experiment_inputs_poison_the_cache_past_every_length():
    from experiments.mla_decode import EXPERIMENT, case_lengths

    for kind in ("short", "over_page", "one_long"):
        case = {"grid": "t", "batch": 8, "h_q": 16, "s_q": 2, "seqlen": 64, "lengths": kind, "dtype": "bf16"}
        inputs = EXPERIMENT.make_inputs(case, 1, "cpu")
        kv, table, lens = inputs["kv_cache"], inputs["block_table"], case_lengths(case)
        for i, n in enumerate(lens):
            pages = table[i, :math.ceil(n / 64)].long()
            rows = kv[pages].reshape(-1, 576)
            assert not rows[:n].isnan().any() and rows[n:].isnan().all()
            assert kv[table[i, math.ceil(n / 64):].long()].isnan().all()  # unused entries: NaN pages
        check_mla_inputs(inputs["q"], kv, table, inputs["cache_seqlens"])


def test_matched_cases_have_the_skewed_cases_total():
    from experiments.mla_decode import SKEWED, case_lengths

    for kind in SKEWED:
        case = {"grid": "t", "batch": 32, "h_q": 128, "s_q": 1, "seqlen": 1024, "lengths": kind, "dtype": "bf16"}
        skewed, even = case_lengths(case), case_lengths({**case, "lengths": f"match_{kind}"})
        assert len(even) == len(skewed) and sum(even) == sum(skewed) and max(even) - min(even) <= 1


# Few compiles on purpose (each takes a while): every searched schedule at the compute-bound
# shape, the default at the smallest-row shape (mma, not wgmma), and the combine.
COMPILES = [(128, 1, "bfloat16", k) for k in tl_mla.CANDIDATES] + [(16, 2, "float16", tl_mla.Knobs())] + [
    (16, 2, "bfloat16", tl_mla.Knobs(pad_rows=True))]  # 32 rows in a zero-padded 64-row wgmma tile


@pytest.mark.parametrize("h_q,s_q,dtype,knobs", COMPILES, ids=lambda x: str(x))
def test_tilelang_split_kernel_compiles_for_hopper(h_q, s_q, dtype, knobs):
    kernel = compile_kernel(tl_mla.mla_decode_split_kv, h_q, s_q, dtype, 576 ** -0.5, target=HOPPER,
                            **knobs.builder_args())
    src = kernel.get_kernel_source()
    assert "exp2f(" in src and "log2f(" in src  # the online softmax in base 2 and the LSE it writes
    if tl_mla.row_tile(s_q * h_q, knobs.pad_rows) == 64:
        assert "wgmma" in src and "tma_load" in src  # Hopper tensor cores, TMA loads of K/V


def test_warp_specialized_candidate_compiles_for_hopper():
    """kernels/mla_decode_ws.py: three warpgroups (a cp.async producer, two consumers splitting
    O's columns), mbarrier hand-offs, register budgets per warpgroup."""
    from kernels.mla_decode_ws import mla_decode_ws

    knobs = tl_mla.Knobs(kernel="ws")
    assert tl_mla.builder_args(knobs, HOPPER) == {"block_N": 64, "stages": 2}
    src = compile_kernel(mla_decode_ws, 128, 1, "bfloat16", 576 ** -0.5, target=HOPPER,
                         **knobs.builder_args()).get_kernel_source()
    assert "wgmma" in src and "cp_async" in src and ".arrive(" in src and "exp2f(" in src


def _last_shared_offset(src: str) -> int:
    """Where the kernel's last shared-memory buffer starts (within Hopper's 227 KB, it fits)."""
    offsets = [int(x) for x in re.findall(r"buf_dyn_shmem \+ (\d+)\)", src)]
    assert offsets, "no dynamic shared memory found"
    return max(offsets)


@pytest.mark.parametrize("block_N,stages", [(64, 2), (32, 4)])
def test_seesaw_candidate_compiles_for_hopper(block_N, stages):
    """kernels/mla_decode_seesaw.py: a producer and two consumers that each score their own block
    of a pair and swap row maxima; P in the rope columns of its block (64 keys) or in its own tiles
    (32 keys), all within Hopper's 227 KB of shared memory."""
    from kernels.mla_decode_seesaw import mla_decode_seesaw

    knobs = tl_mla.Knobs(kernel="seesaw", block_N=block_N, stages=stages)
    assert knobs.kernel == "seesaw" and tl_mla.builder_args(knobs, HOPPER) == {"block_N": block_N, "stages": stages}
    kernel = compile_kernel(mla_decode_seesaw, 128, 1, "bfloat16", 576 ** -0.5, target=HOPPER, **knobs.builder_args())
    src = kernel.get_kernel_source()
    assert "wgmma" in src and "cp_async" in src and "stats[1].wait(" in src and "exp2f(" in src
    assert _last_shared_offset(src) < 227 * 1024
    if (block_N, stages) == (32, 4):  # the default's: no register spills
        assert ptxas_usage(kernel)["spill_stores"] == 0


def test_pingpong_kernel_compiles_for_hopper_without_spills():
    """kernels/mla_decode_pingpong.py: FlashMLA's schedule, two warpgroups issuing their own TMA
    loads (one barrier per 64-column slice), Q's rope part and P as register operands, in 255
    registers or fewer without spilling."""
    from kernels.mla_decode_pingpong import mla_decode_pingpong

    knobs = tl_mla.Knobs(kernel="pingpong")
    assert tl_mla.builder_args(knobs, HOPPER) == {}
    kernel = compile_kernel(mla_decode_pingpong, 128, 1, "bfloat16", 576 ** -0.5, target=HOPPER)
    assert ptxas_usage(kernel)["spill_stores"] == 0
    src = kernel.get_kernel_source()
    assert "wgmma" in src and "tma_load" in src and "expect_transaction" in src and "cp_async" not in src
    assert _last_shared_offset(src) < 227 * 1024
    with pytest.raises(ValueError, match="multiple of 64"):
        tl_mla.make_plan(torch.tensor([4096] * 4, dtype=torch.int32), 16, 2, knobs)
    assert tl_mla.make_plan(torch.tensor([4096] * 4, dtype=torch.int32), 64, 1, knobs).knobs.kernel == "pingpong"


def test_lean_split_kernel_is_the_default_and_tests_the_tail_at_run_time():
    """lean_tail masks the last block (s_q = 1) and zeroes its cache rows only when the length
    ends inside it: a run-time test on the length appears; staged_out stores through shared memory."""
    plain = compile_kernel(tl_mla.mla_decode_split_kv, 128, 1, "bfloat16", 576 ** -0.5, target=HOPPER,
                           **tl_mla.Knobs(lean_tail=False, staged_out=False).builder_args()).get_kernel_source()
    lean = compile_kernel(tl_mla.mla_decode_split_kv, 128, 1, "bfloat16", 576 ** -0.5, target=HOPPER,
                          **tl_mla.Knobs().builder_args()).get_kernel_source()  # the default
    assert "(seqlen & 63)" not in plain and "(seqlen & 63)" in lean  # the length's offset in its last block
    assert "tma_store" not in plain and "tma_store" in lean  # O staged in shared memory, then one TMA store


def test_wide_combine_candidate_compiles():
    """kernels/mla_decode_combine.py: the pieces' max and weight sum reduced across the threads,
    the O rows four pieces a step (vector loads, no branch on the step's last pieces)."""
    from kernels.mla_decode_combine import mla_decode_combine_wide

    src = compile_kernel(mla_decode_combine_wide, 16, 1, "bfloat16", target=HOPPER).get_kernel_source()
    assert "AllReduce<tl::MaxOp" in src and "AllReduce<tl::SumOp" in src and "float4" in src and "log2f(" in src
    with pytest.raises(ValueError, match="combine"):
        tl_mla.make_plan(torch.tensor([4096] * 4, dtype=torch.int32), 16, 1, tl_mla.Knobs(combine="fast"))


def test_split_kernel_builds_for_sm80_with_guarded_loads():
    """Before Hopper (no TMA, no warp specialization) the tile is a guarded load, one stage: the
    wrapper picks that for the target, and it compiles; Hopper keeps TMA loads."""
    args = tl_mla.builder_args(tl_mla.Knobs(), {"kind": "cuda", "arch": "sm_80"})
    assert args["tma_loads"] is False and args["stages"] == 1
    assert tl_mla.builder_args(tl_mla.Knobs(), HOPPER) == tl_mla.Knobs().builder_args()
    src = compile_kernel(tl_mla.mla_decode_split_kv, 128, 1, "float16", 576 ** -0.5,
                         target={"kind": "cuda", "arch": "sm_80"}, **args).get_kernel_source()
    assert "wgmma" not in src and "tma_load" not in src and "exp2f(" in src


def test_tilelang_combine_compiles_for_hopper():
    src = compile_kernel(tl_mla.mla_decode_combine, 128, 1, "bfloat16", target=HOPPER).get_kernel_source()
    assert "exp2f(" in src and "log2f(" in src  # pieces weighted by exp2 of their log2-LSE, natural LSE out


def test_split_combine_and_plan_stay_within_160_lines():
    from repro.loc import counter

    text = (ROOT / "kernels" / "mla_decode.py").read_text()
    names = ["mla_decode_split_kv", "mla_decode_combine", "mla_decode_plan", "_pieces", "_makespan"]
    total, _ = counter.count_definitions(text, names)
    assert total.code <= 160, total
    for name in names[:2]:
        assert counter.count_definitions(text, [name])[0].code <= 100


def test_candidates_are_valid_schedules():
    assert len(set(tl_mla.CANDIDATES)) == len(tl_mla.CANDIDATES) >= 2
    for k in tl_mla.CANDIDATES:
        assert 64 % k.block_N == 0 and k.stages >= 1 and k.ctas_per_sm >= 1
    assert all(k.block_N == 64 for k in tl_mla.candidates(16, 2)) and len(tl_mla.candidates(128, 1)) == 4
    assert [tl_mla.row_tile(r) for r in (8, 16, 32, 64, 128)] == [8, 16, 32, 64, 64]
    assert [tl_mla.row_tile(r, pad_rows=True) for r in (8, 16, 32, 48, 64, 128)] == [8, 16, 64, 64, 64, 64]
    assert tl_mla.target_pieces(16, 2, tl_mla.Knobs(pad_rows=True), 132) == 132
    assert all(k.pad_rows is None and k.balanced and k.kernel is None for k in tl_mla.CANDIDATES)  # ws, pingpong: under measurement


def test_plan_picks_the_kernel_by_the_pieces_length(monkeypatch):
    """Knobs() leaves the kernel to make_plan: on Hopper, 32-row tiles (h_q 32, or 16 with s_q 2)
    whose pieces average 12 or more 64-key blocks go to the seesaw kernel with four 32-key buffers,
    planned in 32-key blocks; 64-row tiles whose pieces average 64 or more to the pingpong kernel;
    the rest, 16-row tiles and anything before Hopper, to the split kernel."""
    def lens(n, batch=128):
        return torch.tensor([n] * batch, dtype=torch.int32)

    for h_q, s_q in ((32, 1), (16, 2)):
        plan = tl_mla.make_plan(lens(8192), h_q, s_q)
        assert plan.knobs.kernel == "seesaw" and plan.args == {"block_N": 32, "stages": 4}
        assert int((plan.pieces[:, 2] - plan.pieces[:, 1]).sum()) == 128 * 8192 // 32  # 32-key blocks
        assert tl_mla.make_plan(lens(768), h_q, s_q).knobs.kernel == "seesaw"  # 12 blocks
        assert tl_mla.make_plan(lens(704), h_q, s_q).knobs.kernel == "split"  # 11
        assert tl_mla.make_plan(lens(8192), h_q, s_q, tl_mla.Knobs(kernel="split")).knobs.pad_rows  # the split kernel, padded
        assert tl_mla.make_plan(lens(1024), h_q, s_q, tl_mla.Knobs(seesaw_from=32)).knobs.kernel == "split"
    for h_q, s_q in ((128, 1), (64, 2), (64, 1)):
        assert tl_mla.make_plan(lens(4096), h_q, s_q).knobs.kernel == "pingpong"  # one piece of 64 blocks each
        assert tl_mla.make_plan(lens(4032), h_q, s_q).knobs.kernel == "split"
        assert tl_mla.make_plan(lens(8192), h_q, s_q, tl_mla.Knobs(pingpong_from=None)).knobs.kernel == "split"
        assert tl_mla.make_plan(lens(8192), h_q, s_q, tl_mla.Knobs(block_N=32)).knobs.kernel == "split"  # 64-key only
    assert tl_mla.make_plan(lens(32768, 1), 128, 1).knobs.kernel == "split"  # one sequence cut into 66 short pieces
    assert tl_mla.make_plan(lens(8192), 16, 1).knobs.kernel == "split"
    monkeypatch.setenv("REPRO_TILELANG_TARGET", "sm_80")
    plan = tl_mla.make_plan(lens(8192), 32, 1)
    assert plan.knobs.kernel == "split" and plan.args["tma_loads"] is False
    assert tl_mla.target_pieces(128, 1, tl_mla.Knobs(), 132) == 66  # two row tiles share the SMs
    assert tl_mla.target_pieces(16, 1, tl_mla.Knobs(ctas_per_sm=2), 132) == 264


def _expect(msg, *args, **kw):
    with pytest.raises(ValueError, match=msg):
        check_mla_inputs(*args, **kw)


def test_bad_inputs_are_refused():
    q, kv, table, lens = paged_inputs([100, 70], s_q=1, h_q=16)
    _expect("d_qk = d_v", q[..., :500].contiguous(), kv, table, lens)
    _expect("d_qk = d_v", q, kv, table, lens, d_v=448)
    _expect("share one dtype", q.bfloat16(), kv, table, lens)
    _expect("block table too short", q, kv, table[:, :1].contiguous(), lens)
    _expect("longer than the cache", q, kv[:2], table.clamp_max(1), torch.tensor([100, 170], dtype=torch.int32))
    _expect("int32", q, kv, table.long(), lens)
    _expect("new token", *paged_inputs([1, 70], s_q=2, h_q=16))
    _expect("outside", q, kv, table + 10, lens)
    with pytest.raises(ValueError, match="block table too short"):
        tl_mla.mla_decode(q, kv, table[:, :1].contiguous(), lens)  # the wrapper checks first
    with pytest.raises(ValueError, match="plan"):  # a plan made for other lengths
        tl_mla.mla_decode(q, kv, table, lens, plan=tl_mla.make_plan(torch.tensor([700, 70], dtype=torch.int32), 16, 1))


@pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter check is for CPU-only machines")
def test_triton_kernel_matches_reference_in_interpreter():
    pytest.importorskip("triton")
    script = ROOT / "tests" / "mla_triton_interpret.py"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_searched_schedule_of_an_older_version_is_not_taken(tmp_path, monkeypatch):
    """A schedule cached for an earlier version of the kernels (here: one keyed without their
    hash, naming fields since renamed) is not taken: the case gets today's default, and a schedule
    searched for today's sources is taken."""
    import json

    from experiments import mla_decode as E
    from repro.measure import tuning

    monkeypatch.setattr(tuning, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(E, "_knob_key", lambda case: "h_q=32,s_q=1,bf16,GPU")
    old = {"block_N": 32, "stages": 3, "threads": 256, "ctas_per_sm": 1, "pad_rows": None, "balanced": True, "ws": False}
    (tmp_path / "mla_decode-knobs.json").write_text(json.dumps({"h_q=32,s_q=1,bf16,GPU": old}))
    case = {"h_q": 32, "s_q": 1, "dtype": "bf16"}
    assert E.tilelang_knobs(case) == tl_mla.default_knobs(32, 1)
    tuning.KnobCache("mla_decode", E.KERNEL_FILES).put("h_q=32,s_q=1,bf16,GPU", asdict(tl_mla.Knobs(block_N=32, stages=3)))
    assert E.tilelang_knobs(case) == tl_mla.Knobs(block_N=32, stages=3)
