"""The correctness gate catches what a wrong or lazy kernel does (on CPU tensors)."""
from __future__ import annotations

import math

import pytest
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


# One (case, backend) measurement on the CPU, driven by the run's settings alone (issue 13).

def _measure(backend: str, *overrides: str) -> dict:
    from repro.measure.case import measure
    from repro.measure.experiment import load_experiment
    from repro.run.runner import CPU_PROFILE
    from repro.run.validate import settings_of
    from tests.helpers import compose_config

    exp = load_experiment("selftest")
    settings = settings_of(compose_config("experiment=selftest", *overrides)).replace(seed=3)
    return measure(exp, exp.backend(backend), {"n": 16, "dtype": "fp32"}, settings, CPU_PROFILE, device="cpu")


def test_measure_times_with_the_settings_reps():
    row = _measure("matmul", "bench.rep_ms=100000", "bench.min_reps=4", "bench.max_reps=9", "bench.trials=1")
    assert row["status"] == "ok" and row["reps"] == 9
    assert _measure("matmul", "bench.rep_ms=0.000001", "bench.min_reps=4", "bench.max_reps=9",
                    "bench.trials=1")["reps"] == 4
    # Three trials share the budget out: the pooled samples stay within [min_reps, max_reps].
    many = _measure("matmul", "bench.rep_ms=100000", "bench.min_reps=4", "bench.max_reps=9", "bench.trials=3")
    few = _measure("matmul", "bench.rep_ms=0.000001", "bench.min_reps=4", "bench.max_reps=9", "bench.trials=3")
    assert many["trials"] == 3 and many["reps"] == 9 and len(many["trial_ms"].split(";")) == 3
    assert 4 <= few["reps"] <= 9


def test_gate_takes_its_tolerance_from_the_settings():
    assert _measure("wrong")["status"] == "incorrect"  # zeros: relative L2 error 1
    loose = _measure("wrong", "bench.tolerance.fp32.rel_l2=10", "bench.tolerance.fp32.max_abs_rel=10")
    assert loose["status"] == "ok" and loose["rel_l2"] == pytest.approx(1.0)
