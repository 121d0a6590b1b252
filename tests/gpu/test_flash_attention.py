"""On a GPU: the FlashAttention backends pass the gate on odd shapes (seqlens 1000 and 3001,
batch 1, GQA 8:1, s_q != s_k causal in both directions), writing every output element."""
from __future__ import annotations

import pytest

from experiments.flash_attention import EXPERIMENT, attention_reference, search_schedules
from repro.measure.gate import default_check, poison_outputs

pytestmark = pytest.mark.gpu
TOL = {"fp16": {"rel_l2": 2e-3, "max_abs_rel": 1e-2}, "bf16": {"rel_l2": 1e-2, "max_abs_rel": 5e-2}}
# (batch, s_q, s_k, heads, heads_kv, causal)
SHAPES = [(1, 1000, 1000, 8, 8, False), (1, 3001, 3001, 8, 8, True), (2, 1000, 1000, 16, 2, True),
          (1, 1000, 3001, 8, 1, True), (1, 3001, 1000, 4, 4, True), (1, 3001, 1000, 8, 1, False)]
VARIANTS = [(d, "fp16") for d in (64, 128, 256)] + [(128, "bf16")]


def _case(shape, dim, dtype) -> dict:
    b, s_q, s_k, h, h_kv, causal = shape
    return {"batch": b, "heads": h, "heads_kv": h_kv, "seq_q": s_q, "seq_k": s_k, "head_dim": dim,
            "causal": causal, "dtype": dtype}


def _gate(backend: str, case: dict, seed: int = 1) -> dict:
    inputs = EXPERIMENT.make_inputs(case, seed, "cuda")
    fn = EXPERIMENT.backend(backend).build(case, inputs)
    poison_outputs(inputs)  # a kernel that skips part of `out` now fails on NaN
    return default_check(fn(), EXPERIMENT.reference(case, inputs), TOL[case["dtype"]])


@pytest.mark.parametrize("backend", ["tilelang", "triton"])
@pytest.mark.parametrize("dim,dtype", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_our_kernels_pass_the_gate(backend, dim, dtype, shape):
    res = _gate(backend, _case(shape, dim, dtype))
    assert res["passed"], res["error"]


@pytest.mark.parametrize("backend", ["sdpa_flash", "cudnn", "fa2", "fa3"])
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[2], SHAPES[3]])
def test_library_backends_pass_the_gate(backend, shape):
    reason = EXPERIMENT.backend(backend).probe()
    if reason:
        pytest.skip(reason)
    try:
        res = _gate(backend, _case(shape, 128, "bf16"))
    except RuntimeError as exc:  # e.g. an SDPA backend without a bottom-right causal path
        if "No available kernel" in str(exc):
            pytest.skip(f"{backend} cannot run this case: {exc}")
        raise
    assert res["passed"], res["error"]


def test_rows_without_a_key_are_zero():
    case = _case((1, 3001, 1000, 4, 4, True), 128, "fp16")
    inputs = EXPERIMENT.make_inputs(case, 2, "cuda")
    out = EXPERIMENT.backend("tilelang").build(case, inputs)()
    assert out[:, :2001].abs().max().item() == 0.0 and out[:, 2001:].abs().max().item() > 0


def test_reference_matches_sdpa_math():
    import torch
    import torch.nn.functional as F
    from torch.nn.attention.bias import causal_lower_right

    q = torch.randn(2, 700, 8, 64, device="cuda")
    k, v = (torch.randn(2, 1300, 2, 64, device="cuda") for _ in range(2))
    ref = F.scaled_dot_product_attention(q.transpose(1, 2), k.repeat_interleave(4, 2).transpose(1, 2),
                                         v.repeat_interleave(4, 2).transpose(1, 2),
                                         attn_mask=causal_lower_right(700, 1300)).transpose(1, 2)
    torch.testing.assert_close(attention_reference(q, k, v, True), ref, rtol=1e-4, atol=1e-4)


def test_schedule_search_picks_a_candidate_and_caches_it():
    from experiments.flash_attention import tilelang_knobs
    from kernels.flash_attention import CANDIDATES

    case = _case((1, 1000, 1000, 16, 2, True), 128, "bf16")
    search_schedules([case])
    assert tilelang_knobs(case) in CANDIDATES[128]
    res = _gate("tilelang", case)
    assert res["passed"], res["error"]
