"""Every TileLang FlashAttention variant compiles for Hopper (sm_90a) with nvcc and no GPU.

One small odd shape per variant (GQA 2:1, s_q != s_k, neither a multiple of the block), so
that masking, ragged tiles and the causal offset are all in the compiled code.
"""
from __future__ import annotations

import itertools
import re

import pytest

from kernels._compile import HOPPER
from kernels.flash_attention import CANDIDATES, HEAD_DIMS, compile_flash_attention, tuned_knobs

VARIANTS = list(itertools.product(HEAD_DIMS, [False, True], ["float16", "bfloat16"]))


@pytest.mark.parametrize("dim,causal,dtype", VARIANTS)
def test_variant_compiles_for_sm90a(dim, causal, dtype):
    kernel = compile_flash_attention(1, 4, 2, 200, 333, dim, causal, dtype, tuned_knobs(dim, causal, dtype),
                                     target=HOPPER)
    src = kernel.get_kernel_source()
    assert "wgmma" in src  # Hopper warpgroup MMA, not the mma.sync fallback
    assert "tma_load" in src  # K/V tiles arrive by the bulk tensor copy engine
    assert re.search(r"__launch_bounds__\(384", src)  # 2 consumer warpgroups + the TMA producer


@pytest.mark.parametrize("dim", HEAD_DIMS)
def test_every_search_candidate_compiles(dim):
    for knobs in CANDIDATES[dim][1:]:  # the table's entry is compiled above
        compile_flash_attention(2, 8, 8, 1000, 1000, dim, True, "bfloat16", knobs, with_out=True,
                                target=HOPPER)


def test_builder_is_within_its_line_budget():
    from repro.loc.budgets import check_budget

    check = check_budget("kernels/flash_attention.py:flash_attention_fwd", 100)
    assert check.within, f"{check.code_lines} code lines"
