"""Bad input is refused before any device work, with the offending key and the allowed values."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from repro.runner import plan
from repro.validate import ConfigError
from tests.helpers import compose_config

ROOT = Path(__file__).resolve().parent.parent

BAD = [
    (["backends=[cutlass]"], "unknown backend"),
    (["backends=[]"], "backends"),
    (["dtype=fp64"], "unsupported dtype"),
    (["dtypes=[fp16,int4]"], "unsupported dtype"),
    (["shapes=[[-1,128,128]]"], "positive integers"),
    (["shapes=[[1.5,128,128]]"], "positive integers"),
    (["shapes=[[128,128]]"], "[M, N, K]"),
    (["shapes=[[64,64,64],[64,64,64]]"], "listed twice"),
    (["bench.warmup_ms=-1"], "bench.warmup_ms"),
    (["bench.min_reps=0"], "bench.min_reps"),
    (["bench.min_reps=50", "bench.max_reps=10"], "bench.max_reps"),
    (["bench.correctness_trials=0"], "bench.correctness_trials"),
    (["bench.flush_l2=maybe"], "bench.flush_l2"),
    (["bench.timer=wallclock"], "bench.timer"),
    (["bench.timeout_s=0"], "bench.timeout_s"),
    (["bench.tolerance.fp16.rel_l2=-1"], "tolerance"),
    (["hardware.name=tpu"], "hardware"),
]


@pytest.mark.parametrize("overrides,needle", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_override_is_refused_clearly(overrides, needle):
    cfg = compose_config("experiment=gemm", *overrides)
    with pytest.raises(ConfigError) as err:
        plan(cfg)
    assert needle in str(err.value)


def run_cli(*args: str):
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_unknown_experiment_names_the_choices():
    res = run_cli("experiment=nope")
    assert res.returncode != 0
    assert "experiment/nope" in res.stderr and "gemm" in res.stderr
    assert "Traceback" not in res.stderr


def test_bad_backend_exits_with_one_line():
    res = run_cli("experiment=gemm", "backends=[nope]")
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error: backends: unknown backend") and "Traceback" not in res.stderr


def test_dry_run_lists_cases_without_a_device():
    res = run_cli("experiment=gemm", "dry_run=true", "dtype=fp16")
    assert res.returncode == 0, res.stderr
    assert "M=8192,N=8192,K=8192" in res.stdout.replace("K=8192,M=8192,N=8192", "M=8192,N=8192,K=8192") or \
        "K=8192,M=8192,N=8192" in res.stdout


def test_no_gpu_ends_with_a_clear_message(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    res = run_cli("experiment=gemm", f"results_dir={tmp_path}")
    assert res.returncode == 3
    assert "no GPU or NPU found" in res.stderr and "Traceback" not in res.stderr
    assert not any(tmp_path.iterdir())  # nothing written
