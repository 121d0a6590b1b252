"""Every TileLang FlashAttention variant compiles for Hopper (sm_90a) with nvcc and no GPU.

One small odd shape per variant (GQA 2:1, s_q != s_k, neither a multiple of the block), so that
masking, ragged tiles and the causal offset are all in the compiled code. Each head dim is built
with both schedules (serial, overlap) between them covering fp16/bf16, causal or not, static and
dynamic shapes; compiles take seconds each, so the list stays short.
"""
from __future__ import annotations

import re

import pytest

from kernels._compile import HOPPER, ptxas_usage
from kernels.flash_attention import (CANDIDATES, HEAD_DIMS, OVERLAP, SCHEDULES, SERIAL, V_HEAD_DIMS, Knobs,
                                     compile_flash_attention, tuned_knobs)

# (head dim, schedule, causal, dtype, dynamic)
VARIANTS = [(64, SERIAL, True, "float16", False), (64, OVERLAP, False, "bfloat16", True),
            (128, SERIAL, False, "bfloat16", True), (128, OVERLAP, True, "float16", False),
            (192, SERIAL, False, "float16", False), (192, OVERLAP, True, "bfloat16", True),
            (256, SERIAL, True, "bfloat16", False), (256, OVERLAP, False, "float16", False)]
SMEM_LIMIT = 227 * 1024  # bytes of shared memory one Hopper CTA may have


def _knobs(dim: int, schedule: str) -> Knobs:
    if schedule == SERIAL:
        return tuned_knobs(dim)
    return next(k for k in CANDIDATES[dim] if k.schedule == schedule)


@pytest.mark.parametrize("dim,schedule,causal,dtype,dynamic", VARIANTS)
def test_variant_compiles_for_sm90a(dim, schedule, causal, dtype, dynamic):
    kernel = compile_flash_attention(1, 4, 2, 200, 333, dim, causal, dtype, _knobs(dim, schedule),
                                     dynamic=dynamic, target=HOPPER)
    # No register spills: values live across the producer/consumer split once made the overlap
    # schedule spill 1.6 KB per thread (the producer's 24 registers could not hold them).
    usage = ptxas_usage(kernel)
    assert usage["spill_stores"] == 0 and usage["stack"] == 0, usage
    src = kernel.get_kernel_source()
    assert "wgmma" in src  # Hopper warpgroup MMA, not the mma.sync fallback
    assert "tma_load" in src  # K/V tiles arrive by the bulk tensor copy engine
    assert re.search(r"__launch_bounds__\(384", src)  # 2 consumer warpgroups + the TMA producer
    if schedule == OVERLAP:  # QK^T of the next block is waited on while PV of this one runs
        assert "wait_wgmma<1>" in src and "warpgroup_reg_alloc<240>" in src
    assert bool(re.search(r"int seq_q\b", src)) == dynamic  # run-time lengths only when asked
    assert f"{V_HEAD_DIMS[dim]}" in src


def _smem_bytes(dim: int, knobs: Knobs) -> int:
    dim_v = V_HEAD_DIMS[dim]
    out_tile = knobs.block_M * dim_v if dim_v != dim else 0  # else the output reuses Q's tile
    return 2 * (knobs.block_M * dim + out_tile + knobs.num_stages * knobs.block_N * (dim + dim_v))


@pytest.mark.parametrize("dim", HEAD_DIMS)
def test_search_candidates_are_valid_schedules(dim):
    cands = CANDIDATES[dim]
    assert cands[0] == tuned_knobs(dim) and cands[0].schedule == SERIAL  # the table's, which builds anywhere
    assert len(set(cands)) == len(cands) and {k.schedule for k in cands} == set(SCHEDULES)
    for knobs in cands:
        assert knobs.threads == 128 * (knobs.block_M // 64) and knobs.block_N % 16 == 0
        assert _smem_bytes(dim, knobs) <= SMEM_LIMIT, knobs


@pytest.mark.parametrize("dim", HEAD_DIMS)
def test_the_largest_overlap_candidate_compiles(dim):
    knobs = max((k for k in CANDIDATES[dim] if k.schedule == OVERLAP), key=lambda k: _smem_bytes(dim, k))
    if knobs == _knobs(dim, OVERLAP):
        pytest.skip("compiled above")
    compile_flash_attention(2, 8, 8, 1000, 1000, dim, True, "bfloat16", knobs, with_out=True, target=HOPPER)


def test_varlen_kernel_compiles_for_sm90a():
    from kernels.flash_attention_varlen import compile_flash_attention_varlen

    src = compile_flash_attention_varlen(8, 1, 128, True, "bfloat16", target=HOPPER).get_kernel_source()
    assert "wgmma" in src and "tma_load" in src
    assert re.search(r"int max_seqlen_q", src) and re.search(r"int total_q", src)  # one kernel for all batches


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="schedule 'pingpong' unknown"):
        compile_flash_attention(1, 4, 4, 64, 64, 128, False, "float16", Knobs(schedule="pingpong"), target=HOPPER)


@pytest.mark.parametrize("key", ["kernels/flash_attention.py:flash_attention_fwd",
                                 "kernels/flash_attention_varlen.py:flash_attention_varlen_fwd"])
def test_builders_are_within_their_line_budget(key):
    from repro.loc.budgets import check_budget

    check = check_budget(key, 100)
    assert check.within, f"{check.code_lines} code lines"
