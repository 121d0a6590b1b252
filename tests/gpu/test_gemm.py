"""On a GPU: every GEMM backend passes the gate, odd shapes included, and the timer behaves."""
from __future__ import annotations

import pytest

from experiments.gemm import EXPERIMENT
from repro.measure.gate import default_check, poison_outputs
from repro.measure.timer import time_cuda

pytestmark = pytest.mark.gpu
TOL = {"fp16": {"rel_l2": 2e-3, "max_abs_rel": 1e-2}, "bf16": {"rel_l2": 1e-2, "max_abs_rel": 5e-2}}


@pytest.mark.parametrize("backend", ["tilelang", "cublas", "triton"])
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("shape", [(1000, 1000, 1000), (129, 257, 65), (4096, 576, 7168), (77, 4096, 4000)])
def test_backend_matches_reference(backend, dtype, shape):
    case = {"M": shape[0], "N": shape[1], "K": shape[2], "dtype": dtype}
    inputs = EXPERIMENT.make_inputs(case, 1, "cuda")
    fn = EXPERIMENT.backend(backend).build(case, inputs)
    poison_outputs(inputs)
    res = default_check(fn(), EXPERIMENT.reference(case, inputs), TOL[dtype])
    assert res["passed"], res["error"]


def test_timer_sees_work_scale():
    import torch

    a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    small = time_cuda(lambda: a[:1024, :1024] @ a[:1024, :1024], rep_ms=20)
    big = time_cuda(lambda: a @ a, rep_ms=20)
    assert big.median_ms > 8 * small.median_ms
    assert small.p25_ms <= small.median_ms <= small.p75_ms
