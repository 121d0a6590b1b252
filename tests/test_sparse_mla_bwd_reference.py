"""The sparse MLA backward experiment on a CPU: its cases validate, its reference's gradients
are the forward's (chunking over queries changes nothing, and each gradient matches a finite
difference of the loss), and the bf16 PyTorch backend passes the gate against it."""
from __future__ import annotations

import pytest
import torch

from experiments import _dsa
from experiments import sparse_mla_bwd as exp
from repro.measure.gate import default_check

CASE = {"t": 6, "s": 40, "mode": "prefill", "heads": 16, "d_qk": 576, "d_v": 512, "topk": 16, "dtype": "bf16"}
TOL = {"rel_l2": 1.0e-2, "max_abs_rel": 5.0e-2}


def test_cases_validate_and_head_counts_the_backward_cannot_tile_are_refused():
    exp.validate_case(CASE)
    with pytest.raises(ValueError, match="multiple of 16"):
        exp.validate_case({**CASE, "heads": 8})


def test_the_autograd_forward_is_the_forward_experiments_reference():
    from experiments import sparse_mla

    inputs = exp.make_inputs(CASE, 4, "cpu")
    inputs["indices"][0, 0, :] = -1  # a query with no valid index: out 0
    inputs["indices"][1, 0, 3:] = -1
    ref, _ = sparse_mla._attend(inputs["q"], inputs["kv"], inputs["indices"][:, 0], 0.05, 512, torch.float32)
    got = exp._attend(inputs["q"], inputs["kv"], inputs["indices"][:, 0], 0.05, 512, torch.float32)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert float(got[0].abs().max()) == 0.0


def test_chunking_over_queries_gives_the_same_gradients(monkeypatch):
    inputs = exp.make_inputs(CASE, 1, "cpu")
    whole = exp.reference(CASE, inputs)
    monkeypatch.setattr(_dsa, "query_chunk", lambda *a, **k: 2)  # three chunks; dkv sums over them
    chunked = exp.reference(CASE, inputs)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_reference_gradients_match_finite_differences():
    """d/dx of sum(out * d_out) along a random direction, by central differences in float64."""
    inputs = exp.make_inputs(CASE, 2, "cpu")
    dq, dkv = exp.reference(CASE, inputs)
    idx = inputs["indices"][:, 0]

    def loss(q, kv):
        out = exp._attend(q, kv, idx, exp.fwd.sm_scale(CASE), CASE["d_v"], torch.float64)
        return (out * inputs["d_out"].double()).sum()

    q, kv = inputs["q"].double(), inputs["kv"].double()
    gen = torch.Generator().manual_seed(0)
    for grad, which in ((dq, 0), (dkv, 1)):
        direction = torch.randn((q, kv)[which].shape, generator=gen, dtype=torch.float64)
        eps = 1e-4
        plus = [q, kv]
        minus = [q, kv]
        plus[which] = plus[which] + eps * direction
        minus[which] = minus[which] - eps * direction
        numeric = (loss(*plus) - loss(*minus)) / (2 * eps)
        assert float((grad.double() * direction).sum()) == pytest.approx(float(numeric), rel=1e-3)


def test_the_bf16_pytorch_backend_passes_the_gate_and_a_wrong_gradient_does_not():
    inputs = exp.make_inputs(CASE, 3, "cpu")
    ref = exp.reference(CASE, inputs)
    got = exp.build_torch(CASE, inputs)()
    assert default_check(got, ref, TOL)["passed"]
    again = exp.build_torch(CASE, inputs)  # the graph is kept: a second call gives the same
    torch.testing.assert_close(again()[0], again()[0])
    wrong = (got[0], got[1] * 1.05)
    assert not default_check(wrong, ref, TOL)["passed"]


def test_the_gpu_gradient_tests_reference_runs_and_agrees_with_the_experiments():
    """tests/gpu/test_dsa.py's autograd reference (which runs only on a GPU there, and rotted
    unseen once) on a CPU: the experiment's reference gradients, with an index past the kv length
    selecting nothing."""
    from tests.gpu.test_dsa import _sparse_mla_grads_reference

    inputs = exp.make_inputs(CASE, 3, "cpu")
    dq, dkv = exp.reference(CASE, inputs)
    got_dq, got_dkv = _sparse_mla_grads_reference(inputs["q"], inputs["kv"], inputs["indices"], inputs["d_out"],
                                                  exp.fwd.sm_scale(CASE), CASE["d_v"])
    torch.testing.assert_close(got_dq, dq.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_dkv, dkv.float(), rtol=1e-5, atol=1e-5)
    past = inputs["indices"].clone()
    past[0, 0, 0] = CASE["s"] + 3
    _, dkv_past = _sparse_mla_grads_reference(inputs["q"], inputs["kv"], past, inputs["d_out"], exp.fwd.sm_scale(CASE),
                                              CASE["d_v"])
    assert torch.isfinite(dkv_past).all()
