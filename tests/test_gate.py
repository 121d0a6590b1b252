"""The correctness gate catches what a wrong or lazy kernel does (on CPU tensors)."""
from __future__ import annotations

import math

import torch

from repro.measure.gate import INT_POISON, compare, default_check, poison_outputs

TOL = {"rel_l2": 2e-3, "max_abs_rel": 1e-2}


def ref_and_out():
    ref = torch.randn(64, 64, dtype=torch.float64)
    return ref, ref.to(torch.float16)


def test_rounded_output_passes():
    ref, out = ref_and_out()
    assert compare(out, ref, TOL)["passed"]


def test_zeros_fail():
    ref, out = ref_and_out()
    res = compare(torch.zeros_like(out), ref, TOL)
    assert not res["passed"] and res["rel_l2"] > 0.9


def test_unwritten_elements_fail_after_poisoning():
    ref, _ = ref_and_out()
    inputs = {"x": torch.ones(3), "out": torch.empty(64, 64, dtype=torch.float16), "out_idx": torch.empty(3, dtype=torch.int32)}
    poison_outputs(inputs)
    assert torch.isnan(inputs["out"]).all() and inputs["x"].eq(1).all()
    assert inputs["out_idx"].eq(INT_POISON).all()
    inputs["out"][:32] = ref[:32].half()  # a kernel that writes half of its output
    res = compare(inputs["out"], ref, TOL)
    assert not res["passed"] and "NaN" in res["error"]


def test_one_wrong_element_fails_max_abs():
    ref, out = ref_and_out()
    out[3, 5] += 1.0
    assert not compare(out, ref, TOL)["passed"]


def test_shape_mismatch_fails():
    ref, out = ref_and_out()
    assert not compare(out[:10], ref, TOL)["passed"]


def test_masked_infinities_must_match():
    ref = torch.tensor([1.0, -math.inf, 2.0], dtype=torch.float64)
    assert compare(ref.float(), ref, TOL)["passed"]
    assert not compare(torch.tensor([1.0, 0.0, 2.0]), ref, TOL)["passed"]


def test_tuple_outputs_report_the_worst():
    ref, out = ref_and_out()
    bad = out.clone()
    bad[0, 0] = 100
    res = default_check((out, bad), (ref, ref), TOL)
    assert not res["passed"] and "output 1" in res["error"]
    assert not default_check((out,), (ref, ref), TOL)["passed"]
