"""Every experiment config composes, validates and lists its cases without a device."""
from __future__ import annotations

import pytest

from repro.measure.experiment import known_experiments, load_experiment
from repro.run.plan import plan
from tests.helpers import compose_config

MEASURED = [n for n in known_experiments() if n not in ("loc", "portability")]


@pytest.mark.parametrize("name", known_experiments())
def test_config_composes(name):
    cfg = compose_config(f"experiment={name}", "results_dir=/nonexistent")
    assert cfg.experiment == name
    assert cfg.bench.timer == "cuda_events"


@pytest.mark.parametrize("name", MEASURED)
def test_experiment_plans(name):
    cfg = compose_config(f"experiment={name}")
    exp, backends, cases = plan(cfg)
    assert exp.name == name and cases and backends
    assert exp.baseline in exp.backend_names
    for case in cases:
        assert exp.flops(case) >= 0 and exp.bytes(case) > 0  # membw moves bytes only


@pytest.mark.parametrize("profile", ["h100", "h200", "mi300x", "ascend910b"])
def test_hardware_profiles_compose(profile):
    cfg = compose_config(f"hardware={profile}")
    assert cfg.hardware.name == profile
    assert cfg.hardware.peak_tflops.fp16 > 0 and cfg.hardware.hbm_tbps > 0


def test_overrides_narrow_the_sweep():
    cfg = compose_config("experiment=gemm", "backends=[tilelang]", "dtype=bf16", "shapes=[[1000,2000,300]]")
    exp, backends, cases = plan(cfg)
    assert backends == ["tilelang"]
    assert cases == [{"M": 1000, "N": 2000, "K": 300, "dtype": "bf16"}]
