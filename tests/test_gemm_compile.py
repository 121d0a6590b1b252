"""The TileLang GEMM compiles for Hopper (sm_90a) with nvcc and no GPU, on odd shapes too."""
from __future__ import annotations

import pytest

from kernels._compile import HOPPER
from kernels.gemm import CANDIDATES, GemmKnobs, compile_gemm, heuristic_knobs


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("shape", [(1000, 1000, 1000), (8192, 576, 7168)])
def test_compiles_for_sm90a(dtype, shape):
    kernel = compile_gemm(*shape, dtype, heuristic_knobs(*shape), target=HOPPER)
    src = kernel.get_kernel_source()
    assert "wgmma" in src  # Hopper's warpgroup MMA, not the older mma.sync path


def test_every_search_candidate_compiles():
    for knobs in CANDIDATES:
        compile_gemm(4096, 4096, 4096, "fp16", knobs, target=HOPPER)


def test_unsupported_dtype_is_refused():
    with pytest.raises(ValueError, match="unsupported dtype"):
        compile_gemm(128, 128, 128, "fp64", GemmKnobs(), target=HOPPER)


def test_reference_is_float64_product():
    import torch

    from experiments.gemm import EXPERIMENT

    case = {"M": 33, "N": 17, "K": 65, "dtype": "bf16"}
    inputs = EXPERIMENT.make_inputs(case, 0, "cpu")
    ref = EXPERIMENT.reference(case, inputs)
    assert ref.dtype == torch.float64 and ref.shape == (33, 17)
    naive = torch.tensor([[sum(float(inputs["a"][i, k]) * float(inputs["b"][k, j]) for k in range(65))
                           for j in range(17)] for i in range(33)], dtype=torch.float64)
    assert torch.allclose(ref, naive, rtol=1e-12, atol=1e-12)
    assert inputs["a"].abs().sum() > 0  # never zeros
