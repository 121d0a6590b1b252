"""The Ascend-dialect FlashAttention (kernels/ascend/) lowers to Ascend C on the CPU.

tilelang 0.1.15's in-tree Ascend backend (Ascend 950, dav-3510) generates the source without
CANN; making a binary needs CANN's `bisheng` (test skipped without it) and running it an NPU
with torch_npu (test skipped without it).
"""
from __future__ import annotations

import re
import shutil

import pytest

from kernels.ascend.flash_attention import flash_attention_ascend, lower_to_ascendc

SEQLEN, BLOCK = 512, 128


@pytest.fixture(scope="module")
def source() -> str:
    return lower_to_ascendc(batch=1, heads=2, seqlen=SEQLEN, dim=128)


def test_lowers_to_cube_and_vector_code(source):
    assert "ASC_IS_AIC" in source and "ASC_IS_AIV" in source  # a mixed Cube + Vector kernel
    assert len(re.findall(r"ascend_gemm_l1<", source)) == 2  # Q @ K^T and P @ V on the Cube core
    assert "asc_copy_l0c2ub" in source  # scores and P @ V handed to the Vector cores' UB
    assert "asc_copy_ub2l1" in source  # P back to L1 for the second GEMM
    assert "__simt_vf__" in source and "exp2f" in source  # the softmax in SIMT vector regions


def test_every_key_block_is_visited(source):
    """Non-causal: the key loop runs seqlen / block_N times for every query tile."""
    assert re.search(rf"for \(int32_t kb\w* = 0; kb\w* < {SEQLEN // BLOCK};", source)


def test_ragged_sequence_is_refused():
    with pytest.raises(AssertionError, match="seqlen % block"):
        flash_attention_ascend(1, 2, SEQLEN + 64, 128)


def test_builder_is_within_its_line_budget():
    from repro.loc.budgets import check_budget

    check = check_budget("kernels/ascend/flash_attention.py:flash_attention_ascend", 100)
    assert check.within, f"{check.code_lines} code lines"


def _bisheng() -> str | None:
    try:
        from tilelang.contrib.bisheng import find_bisheng_path

        return find_bisheng_path()
    except Exception:
        return shutil.which("bisheng")


@pytest.mark.skipif(_bisheng() is None, reason="CANN's bisheng compiler is not installed")
def test_compiles_with_bisheng():
    import tilelang

    kernel = tilelang.compile(flash_attention_ascend(1, 2, SEQLEN, 128), out_idx=[3], target="ascend")
    assert "ascend_gemm_l1" in kernel.get_kernel_source()


def test_matches_reference_on_an_npu():
    pytest.importorskip("torch_npu", reason="needs an Ascend NPU with torch_npu (and CANN)")
    from kernels.ascend.flash_attention import reference_check

    assert reference_check() < 1e-2
