"""The TileLang GEMMs compile for Hopper (sm_90a) with nvcc and no GPU: every algorithm of the
search (large tiles, swapped small-M tiles, split-K with its reduction, the GEMV path, fp8 with
per-tensor and per-block scales) on odd shapes too; the experiment's fp8 inputs and references."""
from __future__ import annotations

import pytest
import torch

from kernels._compile import HOPPER
from kernels.gemm import (CANDIDATES, GemmKnobs, candidates, compile_gemm, compile_reduce, default_knobs, heuristic_knobs, model_knobs,
                          split_for)
from kernels.gemm_fp8 import compile_gemm_fp8, fp8_candidates
from kernels.gemv import vector_width

# One shape per algorithm; compiles are cached in-process (kernels._compile), so the few
# variants below are each built once for the whole file.
SWAPPED = GemmKnobs(block_M=8, block_N=128, block_K=128, num_stages=5, threads=128, swizzle_panel=0,
                    split_k=3, swap=True)
GEMV = GemmKnobs(block_M=1, block_N=64, block_K=4, num_stages=1, threads=256, swizzle_panel=0, algo="gemv")


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("shape", [(1000, 1000, 1000), (8192, 576, 7168)])
def test_compiles_for_sm90a(dtype, shape):
    kernel = compile_gemm(*shape, dtype, heuristic_knobs(*shape), target=HOPPER)
    src = kernel.get_kernel_source()
    assert "wgmma" in src  # Hopper's warpgroup MMA, not the older mma.sync path


def test_every_large_candidate_compiles():
    for knobs in CANDIDATES:
        compile_gemm(4096, 4096, 4096, "fp16", knobs, target=HOPPER)


def test_swapped_split_k_compiles_with_wgmma_and_ragged_edges():
    src = compile_gemm(1, 7168, 18432, "bf16", SWAPPED, target=HOPPER).get_kernel_source()
    assert "wgmma_ss<" in src and ", 64, 8, 16, true," in src  # 64 x 8 x 16, A (= B^T) transposed
    ragged = compile_gemm(7, 3001, 4099, "bf16", SWAPPED, target=HOPPER).get_kernel_source()
    assert "< 3001" in ragged  # columns past N are never stored
    compile_reduce(7, 3001, 3, "bf16", target=HOPPER)


def test_gemv_path_compiles_with_wide_loads():
    src = compile_gemm(1, 7168, 18432, "bf16", GEMV, target=HOPPER).get_kernel_source()
    assert "wgmma" not in src and "uint4" in src  # CUDA cores, 128-bit loads of B
    compile_gemm(7, 3001, 1000, "fp16", GEMV, target=HOPPER)  # odd N: scalar loads, clamped


@pytest.mark.parametrize("block_scaled", [False, True])
def test_fp8_compiles_with_fp8_wgmma(block_scaled):
    for shape in [(1, 7168, 18432), (4096, 4096, 4096)]:
        knobs = fp8_candidates(*shape, block_scaled)[0]
        src = compile_gemm_fp8(*shape, knobs, block_scaled, target=HOPPER).get_kernel_source()
        assert "wgmma" in src and "e4m3" in src


def test_candidates_per_shape_class():
    decode = candidates(1, 7168, 18432)
    assert any(k.algo == "gemv" for k in decode) and any(k.swap for k in decode)
    assert any(k.split_k > 1 for k in decode)  # 7168 / 128 = 56 tiles for 132 SMs
    assert all(k.block_M % 8 == 0 for k in decode if k.swap)
    assert not any(k.algo == "gemv" for k in candidates(32, 7168, 18432))
    assert not any(k.swap for k in candidates(256, 8192, 8192))
    small_square = candidates(1024, 1024, 1024)
    assert any(k.block_M * k.block_N <= 64 * 64 for k in small_square)  # 256 tiles
    assert candidates(8192, 8192, 8192) == list(CANDIDATES)
    for M, N, K in [(1, 7168, 18432), (64, 2112, 7168), (1000, 3001, 4099)]:
        for k in candidates(M, N, K):
            assert k.split_k >= 1 and len(set(candidates(M, N, K))) == len(candidates(M, N, K))


def test_split_for():
    assert split_for(56, 144) == 3  # 56 tiles: 3 splits fill 132 SMs; 144 steps divide by 3
    assert split_for(200, 144) == 1  # enough tiles already
    assert split_for(1, 8) == 2  # parts keep at least 4 steps


def test_vector_width():
    assert vector_width(7168) == 8 and vector_width(3001) == 1 and vector_width(4100) == 4


def test_unsupported_dtype_is_refused():
    with pytest.raises(ValueError, match="unsupported dtype"):
        compile_gemm(128, 128, 128, "fp64", GemmKnobs(), target=HOPPER)


def test_reference_is_float64_product():
    from experiments.gemm import EXPERIMENT

    case = {"M": 33, "N": 17, "K": 65, "dtype": "bf16"}
    inputs = EXPERIMENT.make_inputs(case, 0, "cpu")
    ref = EXPERIMENT.reference(case, inputs)
    assert ref.dtype == torch.float64 and ref.shape == (33, 17)
    naive = torch.tensor([[sum(float(inputs["a"][i, k]) * float(inputs["b"][k, j]) for k in range(65))
                           for j in range(17)] for i in range(33)], dtype=torch.float64)
    assert torch.allclose(ref, naive, rtol=1e-12, atol=1e-12)
    assert inputs["a"].abs().sum() > 0  # never zeros


@pytest.mark.parametrize("dtype", ["fp8", "fp8_block"])
def test_fp8_inputs_and_dequantized_reference(dtype):
    from experiments.gemm import EXPERIMENT

    case = {"M": 5, "N": 144, "K": 260, "dtype": dtype}  # edge blocks in N and K
    x = EXPERIMENT.make_inputs(case, 0, "cpu")
    assert x["a"].dtype == x["b"].dtype == torch.float8_e4m3fn and x["b"].shape == (144, 260)
    if dtype == "fp8_block":
        assert x["scale_a"].shape == (5, 3) and x["scale_b"].shape == (2, 3)
    ref = EXPERIMENT.reference(case, x)
    # By hand: dequantize element by element with the scale of its block.
    sa, sb = x["scale_a"].double(), x["scale_b"].double()
    a = torch.stack([torch.stack([x["a"][i, k].double() * (sa[i, k // 128] if dtype == "fp8_block" else sa[0])
                                  for k in range(260)]) for i in range(5)])
    b = torch.stack([torch.stack([x["b"][n, k].double() * (sb[n // 128, k // 128] if dtype == "fp8_block" else sb[0])
                                  for k in range(260)]) for n in range(144)])
    assert torch.allclose(ref, a @ b.t(), rtol=1e-12, atol=1e-9)
    assert (a.abs().max() / 448) < 1  # scaled back to the randn range, not saturated
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(a.float(), torch.randn(5, 260, generator=g), rtol=0.07, atol=0.02)


def test_cases_leave_out_shapes_fp8_cannot_take():
    from experiments.gemm import EXPERIMENT
    from tests.helpers import compose_config

    cfg = compose_config("experiment=gemm", "shapes=[[1,7168,18432],[1000,3001,4099],[64,2112,7168]]")
    got = {(c["M"], c["N"], c["K"], c["dtype"]) for c in EXPERIMENT.cases(cfg)}
    assert (1000, 3001, 4099, "bf16") in got and (1000, 3001, 4099, "fp8") not in got
    assert (64, 2112, 7168, "fp8_block") in got and (1, 7168, 18432, "fp8") in got


# model_knobs (the candidate default): what it picks at shapes of the H200 schedule study
# (the fastest measured there), and that every distinct pick compiles.
MODEL_PICKS = {
    (129, 4096, 4096): (64, 128, 64, 6, 1, False),     # one wave of 64-row tiles, deep pipeline
    (1024, 1024, 1024): (64, 128, 64, 4, 1, False),
    (512, 4096, 4096): (128, 128, 128, 3, 1, False),
    (8192, 8192, 8192): (128, 256, 64, 4, 1, False),
    (128, 2112, 7168): (128, 64, 128, 3, 4, True),     # swapped, split-K to fill 132 SMs
    (3, 4096, 14336): (8, 64, 128, 8, 1, True),        # swapped, few rows: no split
    (32, 32768, 512): (32, 128, 64, 8, 1, True),       # short K: 64-deep steps
    (1000, 3000, 777): (64, 128, 64, 4, 1, False),     # rows of A not 16-byte aligned: 64-row tiles
}


@pytest.mark.parametrize("shape", list(MODEL_PICKS), ids=lambda s: "x".join(map(str, s)))
def test_model_knobs_picks(shape):
    k = model_knobs(*shape)
    assert (k.block_M, k.block_N, k.block_K, k.num_stages, k.split_k, k.swap) == MODEL_PICKS[shape]


def test_model_knobs_picks_compile():
    for knobs in {model_knobs(*shape) for shape in [(129, 4096, 4096), (128, 2112, 7168), (1000, 3000, 777)]}:
        M, N, K = next(s for s in MODEL_PICKS if model_knobs(*s) == knobs)
        assert "wgmma" in compile_gemm(M, N, K, "bf16", knobs, target=HOPPER).get_kernel_source()


@pytest.mark.parametrize("shape, source", [
    ((129, 4096, 4096), "model"), ((16, 4096, 4096), "model"), ((2048, 2048, 2048), "model"),   # model's own tile
    ((8192, 8192, 8192), "heuristic"),  # the model picks the heuristic's tile: the heuristic's pipeline
    ((96, 8192, 8192), "heuristic"), ((128, 4096, 4096), "heuristic"),  # 65-128 rows: the heuristic
])
def test_default_knobs_takes_the_model_only_where_it_measured_faster(shape, source):
    want = model_knobs(*shape) if source == "model" else heuristic_knobs(*shape)
    assert default_knobs(*shape) == want
    assert model_knobs(*shape) != heuristic_knobs(*shape) or source == "heuristic"
