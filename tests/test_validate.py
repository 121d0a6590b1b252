"""Bad input is refused before any device work, with the offending key and the allowed values."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from repro.run.plan import plan
from repro.run.validate import ConfigError
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
    # scale-out keys (`++` adds a key the base config may not declare yet)
    (["++shard=2/2"], "shard"),
    (["++shard=0/0"], "shard"),
    (["++shard=1"], "give i/n"),
    (["++shard=a/b"], "give i/n"),
    (["run_id=a/b"], "run_id"),
    (["run_id=.hidden"], "run_id"),
    (["bench.isolate=maybe"], "bench.isolate"),
    (["++device=cpu"], "only the harness self-test"),
    (["++device=tpu"], "device"),
    (["redo=maybe"], "redo"),
    (["dry_run=2"], "dry_run"),
    (["results_dir=''"], "results_dir"),
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


def test_results_dir_that_cannot_be_a_folder_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for value in (blocker, blocker / "below"):
        with pytest.raises(ConfigError, match="results_dir"):
            plan(compose_config("experiment=gemm", f"results_dir={value}"))


@pytest.mark.parametrize("launcher,gpus,needle", [
    ({"_target_": "x.JoblibLauncher", "n_jobs": 0}, 2, "hydra.launcher.n_jobs"),
    ({"_target_": "x.JoblibLauncher", "n_jobs": -1}, 2, "hydra.launcher.n_jobs"),
    ({"_target_": "x.JoblibLauncher", "n_jobs": 4}, 2, "allowed: 1..2"),
    ({"_target_": "x.submitit_launcher.SlurmLauncher", "timeout_min": 0}, 1, "timeout_min"),
    ({"_target_": "x.submitit_launcher.SlurmLauncher", "timeout_min": 60, "gpus_per_node": 2}, 2, "shard=i/n"),
])
def test_bad_launcher_settings_are_refused(launcher, gpus, needle):
    from omegaconf import OmegaConf

    from repro.run.validate import check_launcher

    with pytest.raises(ConfigError) as err:
        check_launcher(OmegaConf.create(launcher), gpus)
    assert needle in str(err.value)


@pytest.mark.parametrize("name", ["joblib", "submitit_local", "submitit_slurm"])
def test_launcher_configs_compose_with_the_merge_callback(name):
    from hydra import compose, initialize_config_dir

    from run import register_resolvers

    plugin = "submitit" if name.startswith("submitit") else "joblib"
    pytest.importorskip(f"hydra_plugins.hydra_{plugin}_launcher", reason="the `slurm` extra is not installed")
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=gemm", f"hydra/launcher={name}"], return_hydra_config=True)
    assert cfg.hydra.callbacks.merge_results._target_ == "repro.run.merge.MergeResults"
    if name == "joblib":
        assert cfg.hydra.launcher.n_jobs >= 1  # the GPU count, resolved
