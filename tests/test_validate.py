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
    (["shapes=[[-1,128,128]]"], "shapes[0][0]=-1: must be > 0"),
    (["shapes=[[1.5,128,128]]"], "shapes[0][0]=1.5: must be an integer"),
    (["shapes=[[128,128]]"], "[M, N, K]"),
    (["shapes=[[64,64,64],[64,64,64]]"], "listed twice"),
    (["bench.warmup_ms=-1"], "bench.warmup_ms"),
    (["bench.min_reps=0"], "bench.min_reps"),
    (["bench.min_reps=50", "bench.max_reps=10"], "bench.max_reps"),
    (["bench.correctness_trials=0"], "bench.correctness_trials"),
    (["bench.flush_l2=maybe"], "bench.flush_l2"),
    (["bench.timeout_s=0"], "bench.timeout_s"),
    (["bench.tolerance.fp16.rel_l2=-1"], "tolerance"),
    # not-a-number and infinite timer settings (issue 12)
    (["bench.warmup_ms=nan"], "bench.warmup_ms"),
    (["bench.rep_ms=inf"], "bench.rep_ms"),
    (["bench.timeout_s=inf"], "bench.timeout_s"),
    (["bench.tolerance.fp16.rel_l2=nan"], "bench.tolerance.fp16.rel_l2"),
    (["bench.seed=-3"], "bench.seed"),
    (["search=maybe"], "search"),
    # each backend and dtype once
    (["backends=[tilelang,tilelang]"], "backends: 'tilelang' is listed twice"),
    (["dtypes=[fp16,fp16]"], "dtypes: 'fp16' is listed twice"),
    # an experiment's own keys keep the kind of value their yaml gives them
    (["shapes=7"], "shapes=7: give a list"),
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


# Errors name the key the user typed (issue 12): `seqlens`, not the `tokens` it must divide.
EXPERIMENT_BAD = [
    ("flash_attention", ["causal=[maybe]"], "causal[0]='maybe': must be true or false"),
    ("flash_attention", ["causal=maybe"], "causal='maybe': give a list"),
    ("flash_attention", ["seqlens=[1000]"], "seqlens: 1000 does not divide tokens=16384"),
    ("flash_attention", ["seqlens=[0]"], "seqlens[0]=0: must be > 0"),
    ("flash_attention", ["seqlens=[512,512]"], "seqlens: 512 is listed twice"),
    ("flash_attention", ["head_dims=[64,100]"], "head dim 100"),
    ("flash_attention", ["tokens=abc"], "tokens='abc': must be an integer"),
    ("flash_attention", ["gqa.seqlens=[3000]"], "gqa.seqlens: 3000 does not divide tokens=16384"),
    ("flash_attention", ["extra_cases=[{batch:1}]"], "extra_cases[0].heads"),
    ("flash_attention", ["extra_cases=[{batch:1,heads:16,seq_q:64,head_dim:128,bogus:1}]"], "extra_cases[0].bogus"),
    ("dsa_topk", ["topk=0"], "topk=0: must be > 0"),
    ("dsa_topk", ["topk=-5"], "topk=-5: must be > 0"),
    ("dsa_topk", ["topk=1.5"], "topk=1.5: must be an integer"),
    ("sparse_mla", ["topk=0"], "topk=0: must be > 0"),
    ("mla_decode", ["grids.0.batch=[0]"], "grids[0].batch[0]=0"),
    ("mla_decode", ["grids.0.h_q=[16,16]"], "grids[0].h_q: 16 is listed twice"),
    ("membw", ["sizes_mib=[0]"], "sizes_mib[0]=0"),
    ("dsa_indexer", ["tolerance.fp8.rel_l2=nan"], "bench.tolerance.fp8.rel_l2"),
]


@pytest.mark.parametrize("name,overrides,needle", EXPERIMENT_BAD, ids=[f"{n} {' '.join(o)}" for n, o, _ in EXPERIMENT_BAD])
def test_experiment_keys_are_checked_by_the_name_typed(name, overrides, needle):
    with pytest.raises(ConfigError) as err:
        plan(compose_config(f"experiment={name}", *overrides))
    assert needle in str(err.value)


def test_experiment_tolerance_is_laid_over_the_bench_tolerance():
    from repro.run.validate import settings_of

    settings = settings_of(compose_config("experiment=dsa_indexer"))
    assert settings.tolerance["fp8"].rel_l2 == 1.0e-3  # configs/experiment/dsa_indexer.yaml
    assert settings.tolerance["fp16"].rel_l2 == compose_config().bench.tolerance.fp16.rel_l2


def run_cli(*args: str):
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def one_error_line(res, code: int) -> str:
    """The documented exit code and exactly one `error:` line on stderr, no traceback."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == code, res.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-2000:]
    return lines[0]


# Hydra-level mistakes: one line, exit 2, before anything runs (issue 12).
HYDRA_BAD = [
    (["experiment=nope"], ["experiment=nope", "gemm", "flash_attention"]),
    (["experimnt=gemm"], ["experimnt", "did you mean 'experiment'"]),
    (["bench=nope"], ["bench=nope", "default", "quick"]),
    (["hardware=tpu"], ["hardware=tpu", "h100"]),
    (["+foo=1"], ["+foo=1", "unknown key 'foo'"]),
    (["++foo=1"], ["++foo=1", "unknown key 'foo'"]),
    (["+bench.nope=1"], ["bench.nope", "bench.rep_ms"]),
    (["bench.rep_mss=10"], ["bench.rep_mss", "did you mean 'bench.rep_ms'"]),
    (["experiment=gemm,flash_attention"], ["--multirun"]),  # a sweep without -m
    (["-m", "experiment=gemm,nope"], ["experiment=nope"]),  # any job of a sweep, before any job runs
    (["experiment=loc", "task=measure"], ["task=measure", "experiment=loc"]),
    (["experiment=gemm", "task=loc"], ["task=loc", "experiment=gemm"]),
]


@pytest.mark.parametrize("args,needles", HYDRA_BAD, ids=[" ".join(a) for a, _ in HYDRA_BAD])
def test_hydra_level_mistakes_end_with_one_line_and_exit_2(args, needles, tmp_path):
    res = run_cli(*args, "dry_run=true", f"hydra.sweep.dir={tmp_path / 'm'}")
    line = one_error_line(res, 2)
    for needle in needles:
        assert needle in line, line


def test_bad_backend_exits_with_one_line():
    res = run_cli("experiment=gemm", "backends=[nope]")
    assert one_error_line(res, 2).startswith("error: backends: unknown backend")


def test_a_sweep_with_a_failed_job_exits_with_its_code(tmp_path):
    """Every job runs; then the sweep exits with the failed job's code (Hydra alone exits 0)."""
    res = run_cli("-m", "experiment=selftest,gemm", "backends=[matmul]", "dry_run=true",
                  f"results_dir={tmp_path / 'r'}", f"hydra.sweep.dir={tmp_path / 'm'}")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "selftest  dtype=fp32,n=16" in res.stdout  # the good job ran
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert errors[0].startswith("error: backends: unknown backend") and "1 job(s) of the sweep failed: #1" in errors[-1]
    ok = run_cli("-m", "experiment=selftest,membw", "dry_run=true", f"results_dir={tmp_path / 'r'}",
                 f"hydra.sweep.dir={tmp_path / 'm'}")  # the same sweep folder: the old note is gone
    assert ok.returncode == 0, ok.stderr[-2000:]


def test_no_device_in_a_sweep_exits_3(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    res = run_cli("-m", "experiment=gemm,membw", f"results_dir={tmp_path / 'r'}", f"hydra.sweep.dir={tmp_path / 'm'}")
    assert res.returncode == 3, res.stderr[-2000:]
    assert "2 job(s) of the sweep failed" in res.stderr and "Traceback" not in res.stderr


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
    assert "no GPU or NPU found" in one_error_line(res, 3)
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
    assert cfg.hydra.callbacks.exit_status._target_ == "repro.cli.SweepExitStatus"  # beside it, not replaced
    if name == "joblib":
        assert cfg.hydra.launcher.n_jobs >= 1  # the GPU count, resolved


def _selftest(tmp_path):
    return compose_config("experiment=selftest", "backends=[matmul]", "bench.isolate=false", "sizes=[16]",
                          f"results_dir={tmp_path}")


def test_read_only_results_subfolder_is_one_line(tmp_path, capsys, monkeypatch):
    """results_dir is writable, results/<hardware>/ is not: refused before measuring, exit 2."""
    import os

    from repro.cli import dispatch
    from repro.run import validate

    sub = tmp_path / "cpu"
    sub.mkdir()
    sub.chmod(0o555)
    if os.access(sub, os.W_OK):  # root ignores modes: make the check see what a user would
        real = os.access
        monkeypatch.setattr(validate.os, "access", lambda p, mode: False if Path(p) == sub else real(p, mode))
    try:
        assert dispatch(_selftest(tmp_path)) == 2
    finally:
        sub.chmod(0o755)
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith("error: results_dir=") and "cpu" in errors[0]
    assert "Traceback" not in err
    assert list(sub.iterdir()) == []  # no manifest, no rows


def test_a_write_that_fails_anyway_is_one_line(tmp_path, capsys, monkeypatch):
    from repro.cli import dispatch
    from repro.results import manifest

    def refuse(_manifest, directory, _run_id):
        raise PermissionError(13, "Permission denied", str(directory))

    monkeypatch.setattr(manifest, "write", refuse)
    assert dispatch(_selftest(tmp_path)) == 2
    err = capsys.readouterr().err  # beside the progress bar
    assert [ln for ln in err.splitlines() if ln.startswith("error")] == [f"error: {tmp_path / 'cpu'}: Permission denied"]
    assert "Traceback" not in err


def test_a_garbage_portability_table_is_refused_not_extended(tmp_path):
    table = tmp_path / "portability.csv"
    table.write_text("this is not\na portability table, at all\n")
    res = run_cli("experiment=portability", f"portability.out={table}", "portability.only_kernels=[gemm]",
                  "portability.only_targets=[ascend910b]")
    assert str(table) in one_error_line(res, 4)
    assert table.read_text() == "this is not\na portability table, at all\n"


@pytest.mark.parametrize("override, key", [
    ("portability.timeout_s=-1", "portability.timeout_s"), ("portability.timeout_s=0", "portability.timeout_s"),
    ("portability.jobs=0", "portability.jobs"), ("portability.redo=maybe", "portability.redo"),
    ("portability.only_kernels=[]", "portability.only_kernels")])
def test_portability_options_are_checked_before_any_build(tmp_path, override, key):
    table = tmp_path / "portability.csv"
    res = run_cli("experiment=portability", f"results_dir={tmp_path}", override)
    assert key in one_error_line(res, 2) and not table.exists()


def test_loc_and_portability_write_under_results_dir(tmp_path):
    res = run_cli("experiment=loc", f"results_dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "loc.csv").read_text().startswith("implementation,")
    cfg = compose_config("experiment=portability", f"results_dir={tmp_path}")
    assert cfg.portability.out == f"{tmp_path}/portability.csv" and cfg.portability.results == str(tmp_path)


def test_a_damaged_line_count_table_is_refused_not_extended(tmp_path):
    table = tmp_path / "loc.csv"
    table.write_text('implementation,code_lines\n"cut')
    res = run_cli("experiment=loc", f"results_dir={tmp_path}")
    assert str(table) in one_error_line(res, 4)
    assert table.read_text() == 'implementation,code_lines\n"cut'
