"""On a GPU: every GEMM backend passes the gate, odd shapes included; each algorithm of the search
(swapped tiles, split-K, the GEMV path) is right on its own, at M = 1 and 7 and ragged edges;
fp8 matches the dequantized reference; the timer behaves."""
from __future__ import annotations

import pytest

from experiments.gemm import EXPERIMENT, _compiler
from kernels.gemm import GemmKnobs, candidates
from kernels.gemm_fp8 import fp8_candidates
from repro.measure.gate import default_check, poison_outputs
from repro.measure.timer import time_cuda

pytestmark = pytest.mark.gpu
TOL = {"fp16": {"rel_l2": 2e-3, "max_abs_rel": 1e-2}, "bf16": {"rel_l2": 1e-2, "max_abs_rel": 5e-2},
       "fp8": {"rel_l2": 1e-2, "max_abs_rel": 2e-2}, "fp8_block": {"rel_l2": 1e-2, "max_abs_rel": 2e-2}}


def _check(case, backend="tilelang", knobs=None):
    inputs = EXPERIMENT.make_inputs(case, 1, "cuda")
    if knobs is None:
        fn = EXPERIMENT.backend(backend).build(case, inputs)
    else:
        fn = _compiler(case, knobs)()(inputs)
    poison_outputs(inputs)
    fn()
    res = default_check(inputs["out"], EXPERIMENT.reference(case, inputs), TOL[case["dtype"]])
    assert res["passed"], f"{case} {knobs}: {res['error']}"


@pytest.mark.parametrize("backend", ["tilelang", "cublas", "triton"])
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("shape", [(1000, 1000, 1000), (129, 257, 65), (4096, 576, 7168), (77, 4096, 4000),
                                   (1, 7168, 18432), (7, 3001, 4099), (1000, 3001, 4099)])
def test_backend_matches_reference(backend, dtype, shape):
    _check({"M": shape[0], "N": shape[1], "K": shape[2], "dtype": dtype}, backend)


# Every candidate the search may pick, on shapes that exercise its edges: M = 1 and 7 (swap,
# GEMV), ragged N and K (bounds checks, scalar loads), split-K with a partial last split.
@pytest.mark.parametrize("shape", [(1, 7168, 18432), (7, 3001, 4099), (64, 2112, 7168), (200, 1000, 3001),
                                   (1024, 1024, 1024)])
def test_every_candidate_is_correct(shape):
    case = {"M": shape[0], "N": shape[1], "K": shape[2], "dtype": "bf16"}
    for knobs in candidates(*shape):
        _check(case, knobs=knobs)


@pytest.mark.parametrize("knobs", [
    GemmKnobs(block_M=8, block_N=64, block_K=64, num_stages=4, threads=128, swizzle_panel=0, split_k=5, swap=True),
    GemmKnobs(block_M=64, block_N=128, block_K=64, num_stages=4, threads=128, swizzle_panel=0, split_k=7),
    GemmKnobs(block_M=1, block_N=64, block_K=4, num_stages=1, threads=256, swizzle_panel=0, split_k=3, algo="gemv"),
], ids=["swap-split5", "tile-split7", "gemv-split3"])
def test_split_k_matches_torch(knobs):
    import torch

    M = 7 if knobs.algo == "gemv" else 33
    case = {"M": M, "N": 1000, "K": 4099, "dtype": "fp16"}  # K steps do not divide by the split
    inputs = EXPERIMENT.make_inputs(case, 2, "cuda")
    run = _compiler(case, knobs)()(inputs)
    poison_outputs(inputs)
    run()
    expect = (inputs["a"].float() @ inputs["b"].float()).half()
    assert torch.allclose(inputs["out"].float(), expect.float(), rtol=1e-2, atol=0.1)


@pytest.mark.parametrize("dtype", ["fp8", "fp8_block"])
@pytest.mark.parametrize("shape", [(1, 7168, 18432), (8, 2112, 7168), (128, 7168, 2048), (1000, 4096, 4096),
                                   (77, 3008, 1024)])
def test_fp8_every_candidate_matches_dequantized_reference(dtype, shape):
    case = {"M": shape[0], "N": shape[1], "K": shape[2], "dtype": dtype}
    for knobs in fp8_candidates(*shape, dtype == "fp8_block"):
        _check(case, knobs=knobs)


@pytest.mark.parametrize("backend", ["cublas", "deepgemm"])
@pytest.mark.parametrize("dtype", ["fp8", "fp8_block"])
def test_fp8_baselines_match_dequantized_reference(backend, dtype):
    reason = EXPERIMENT.backend(backend).probe()
    if reason:
        pytest.skip(reason)
    _check({"M": 64, "N": 4096, "K": 7168, "dtype": dtype}, backend)


def test_timer_sees_work_scale():
    import torch

    from dataclasses import replace

    from repro.run.validate import settings_of
    from tests.helpers import compose_config

    timing = replace(settings_of(compose_config()).timer, rep_ms=20)
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    small = time_cuda(lambda: a[:1024, :1024] @ a[:1024, :1024], timing)
    big = time_cuda(lambda: a @ a, timing)
    assert big.median_ms > 8 * small.median_ms
    assert small.p25_ms <= small.median_ms <= small.p75_ms


def test_timer_leaves_the_hosts_launch_time_out():
    """A call whose host side takes 300 us before it launches a ~10 us kernel is timed as the
    kernel: the timer's hold keeps the launch queued ahead of the start event."""
    import time

    import torch

    from dataclasses import replace

    from repro.run.validate import settings_of
    from tests.helpers import compose_config

    timing = replace(settings_of(compose_config()).timer, rep_ms=20)
    a = torch.randn(1024, 1024, device="cuda", dtype=torch.float16)

    def slow_host():
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 3e-4:
            pass
        return a @ a

    quick, slow = time_cuda(lambda: a @ a, timing), time_cuda(slow_host, timing)
    assert slow.median_ms < 0.1 and slow.median_ms < 2 * quick.median_ms + 0.01, (quick, slow)
