"""Scale-out and fault tolerance on CPU, through the harness self-test (experiments/selftest.py).

Sweeps through Hydra's launchers merge into one results file; faulty children become status
rows; a killed sweep resumes where it stopped; GPU claims are exclusive; shards partition.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from repro.run.merge import merge_all
from repro.run.shard import parse_shard, select
from repro.results.store import ResultsStore, StoreError, part_files, read_results
from tests.helpers import compose_config

ROOT = Path(__file__).resolve().parent.parent
SIZES = [16, 24, 32, 48]


def run_py(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def results_of(root: Path) -> pd.DataFrame:
    return read_results(root / "cpu" / "selftest.csv")


PLUGINS = {"submitit_local": "hydra_plugins.hydra_submitit_launcher", "joblib": "hydra_plugins.hydra_joblib_launcher"}


@pytest.mark.parametrize("launcher", ["submitit_local", "joblib"])
def test_sharded_sweep_merges_without_loss_or_duplicates(tmp_path, launcher):
    pytest.importorskip(PLUGINS[launcher], reason="the `slurm` extra (Hydra launcher plugins) is not installed")
    res = run_py("-m", f"hydra/launcher={launcher}", "experiment=selftest", "++shard=0/2,1/2",
                 "backends=[matmul,wrong]", "bench.isolate=false", f"results_dir={tmp_path / 'r'}",
                 f"hydra.sweep.dir={tmp_path / 'm'}", *(["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []))
    assert res.returncode == 0, res.stderr[-3000:]
    df = results_of(tmp_path / "r")
    assert sorted(df["case"].str.extract(r"n=(\d+)")[0].astype(int).unique()) == SIZES
    assert len(df) == len(SIZES) * 2 and not df.duplicated(["case", "backend"]).any()
    assert set(df.loc[df.backend == "matmul", "status"]) == {"ok"}
    assert set(df.loc[df.backend == "wrong", "status"]) == {"incorrect"}
    assert df["run_id"].nunique() == 2  # one per shard, each measured half the cases
    assert part_files(tmp_path / "r", "cpu", "selftest") == []


def test_faulty_children_become_status_rows(tmp_path):
    from repro.run.runner import run

    cfg = compose_config("experiment=selftest", "backends=[matmul,crash,hang,oom,raises,wrong]",
                         "bench.isolate=true", "bench.timeout_s=4", "sizes=[16,24]", f"results_dir={tmp_path}")
    assert run(cfg) == 0
    df = results_of(tmp_path).set_index(["case", "backend"])
    for case in ("dtype=fp32,n=16", "dtype=fp32,n=24"):
        status = df.loc[case]["status"].to_dict()
        assert status == {"matmul": "ok", "crash": "error", "hang": "timeout", "oom": "oom", "raises": "error",
                          "wrong": "incorrect"}
        error = df.loc[case]["error"].to_dict()
        assert "SIGABRT" in error["crash"] and "bench.timeout_s" in error["hang"]
        assert "simulated allocation failure" in error["oom"] and "RuntimeError" in error["raises"]


def test_auto_isolation_keeps_pytorch_ops_in_process():
    from repro.measure.experiment import load_experiment
    from repro.run.isolate import isolated

    fa, gemm = load_experiment("flash_attention"), load_experiment("gemm")
    for name in ("tilelang", "fa3", "triton"):
        assert isolated("auto", fa.backend(name)), name
    assert not isolated("auto", gemm.backend("cublas")) and not isolated("auto", fa.backend("torch"))
    assert not isolated("auto", fa.backend("sdpa_flash")) and not isolated("auto", fa.backend("cudnn"))
    assert isolated(True, gemm.backend("cublas")) and not isolated(False, gemm.backend("tilelang"))


def _wait_for_rows(path: Path, n: int, proc: subprocess.Popen, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and len(read_results(path)) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {n} rows in {path} (exit code {proc.poll()})")


def test_kill_and_resume_loses_at_most_the_case_in_flight(tmp_path):
    sizes = list(range(8, 8 + 12))
    args = ["experiment=selftest", "backends=[matmul]", "bench.isolate=false", "bench.rep_ms=150",
            "bench.correctness_trials=1", f"sizes=[{','.join(map(str, sizes))}]", f"results_dir={tmp_path}"]
    proc = subprocess.Popen([sys.executable, "run.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    csv = tmp_path / "cpu" / "selftest.csv"
    _wait_for_rows(csv, 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = results_of(tmp_path)  # still a whole, valid file
    assert 3 <= len(before) < len(sizes)
    res = run_py(*args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"{len(before)} measured already, {len(sizes) - len(before)} to run" in res.stdout
    after = results_of(tmp_path).set_index(["case", "backend"])
    assert len(after) == len(sizes) and set(after["status"]) == {"ok"}
    kept = after.loc[before.set_index(["case", "backend"]).index, "run_id"]
    assert (kept.values == before["run_id"].values).all()  # the first run's rows were not measured again


def _row(case, status="ok", stamp="2026-01-01T00:00:00+00:00", run="r1"):
    return {"experiment": "selftest", "case": case, "backend": "matmul", "status": status, "median_ms": 1.0,
            "tflops": 1.0, "run_id": run, "timestamp": stamp, "code_hash": "c", "env_key": "e"}


def test_merge_keeps_the_newest_row_and_is_idempotent(tmp_path):
    ResultsStore(tmp_path, "cpu", "selftest").write([_row("n=1"), _row("n=2", status="error")])
    a = ResultsStore(tmp_path, "cpu", "selftest", part="a")
    a.write([_row("n=2", stamp="2026-01-02T00:00:00+00:00", run="r2"), _row("n=3", run="r2")])
    b = ResultsStore(tmp_path, "cpu", "selftest", part="b")
    assert b.is_done("n=3", "matmul", "c", "e")  # a job sees what the others wrote
    b.write([_row("n=4", run="r3")])
    report = merge_all(tmp_path)
    assert report.parts == 2 and not report.problems
    df = results_of(tmp_path).set_index("case")
    assert sorted(df.index) == ["n=1", "n=2", "n=3", "n=4"]
    assert df.loc["n=2", "status"] == "ok" and df.loc["n=2", "run_id"] == "r2"
    assert merge_all(tmp_path).parts == 0 and len(results_of(tmp_path)) == 4


def test_damaged_part_is_reported_and_kept(tmp_path):
    ResultsStore(tmp_path, "cpu", "selftest", part="good").write([_row("n=1")])
    bad = tmp_path / "cpu" / "parts" / "selftest.bad.csv"
    bad.write_text("experiment,case,backend,status,median_ms,tflops,run_id\nselftest,n=2,matmul,ok,1")
    report = merge_all(tmp_path)
    assert report.parts == 1 and "truncated" in report.problems[0]
    assert bad.exists() and len(results_of(tmp_path)) == 1
    with pytest.raises(StoreError):
        ResultsStore(tmp_path, "cpu", "selftest")  # a run refuses to start beside a damaged part


def test_shards_partition_the_cases_and_balance_them():
    cases = [{"n": n} for n in range(1, 24)]
    for count in (1, 2, 3, 5):
        parts = [select(cases, (i, count), lambda c: float(c["n"] ** 3)) for i in range(count)]
        assert sorted(c["n"] for p in parts for c in p) == list(range(1, 24))
        assert max(map(len, parts)) - min(map(len, parts)) <= 2
    assert parse_shard("1/2") == (1, 2) and parse_shard(None) is None


CLAIM = """
import sys, time
from repro.measure.devices import exclusive_gpu
import os
with exclusive_gpu() as gpu:
    print("held", gpu, os.environ["CUDA_VISIBLE_DEVICES"], time.time(), flush=True)
    time.sleep(float(sys.argv[1]))
print("released", time.time(), flush=True)
"""


def test_gpu_claims_are_exclusive(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1", "REPRO_GPU_LOCKS": str(tmp_path), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", CLAIM, "1.5"], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    spans = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        fields = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("held", "rel"))}
        gpu, visible, start = fields["held"]
        assert gpu == visible  # the job now sees only its own GPU
        spans.append((gpu, float(start), float(fields["released"][0])))
    assert {g for g, _, _ in spans} == {"0", "1"}
    for i, (g1, s1, e1) in enumerate(spans):
        for g2, s2, e2 in spans[i + 1:]:
            assert g1 != g2 or e1 <= s2 or e2 <= s1, "two jobs held one GPU at once"


def test_scaling_compares_content_and_records_rows(tmp_path):
    from repro.run.scaling import differences, record

    one = pd.DataFrame({"experiment": ["gemm"] * 2, "case": ["M=1", "M=2"], "backend": ["cublas"] * 2,
                        "status": ["ok", "ok"]})
    assert differences(one, one.copy()) == []
    changed = one.assign(status=["ok", "error"])
    assert differences(one, changed) == ["status ok -> error: gemm M=2 cublas"]
    assert differences(one, one.iloc[:1]) == ["only with 1 GPU: gemm M=2 cublas"]
    out = tmp_path / "scaling.csv"
    for wall in (10.0, 9.0):  # a rerun replaces the rows of the same subset and GPU counts
        record(out, [{"gpus": 1, "wall_s": wall, "cases": 2, "subset": "quick"},
                     {"gpus": 2, "wall_s": wall / 2, "cases": 2, "subset": "quick"}])
    df = pd.read_csv(out)
    assert list(df["gpus"]) == [1, 2] and list(df["wall_s"]) == [9.0, 4.5]


def test_scaling_needs_the_gpus_it_names():
    res = subprocess.run([sys.executable, "-m", "repro.run.scaling", "--gpus", "2"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": "0"})
    assert res.returncode == 2 and "--gpus 2" in res.stderr


def test_submitit_slurm_renders_one_gpu_job_array(tmp_path, monkeypatch):
    """The sbatch script the slurm launcher would submit for a six-experiment sweep, rendered here."""
    submitit = pytest.importorskip("submitit", reason="the `slurm` extra is not installed")
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    sweep = "experiment=gemm,flash_attention,mla_decode,dsa_indexer,dsa_topk,sparse_mla"
    jobs = list(OverridesParser.create().parse_overrides([sweep])[0].sweep_string_iterator())
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True,
                      overrides=["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "experiment=gemm"])
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params.pop("_target_").endswith("SlurmLauncher")
    params.pop("submitit_folder")
    params.pop("max_num_timeout")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = submitit.AutoExecutor(cluster="slurm", folder=tmp_path / "jobs")
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    executor._executor.parameters["map_count"] = len(jobs)  # what map_array sets for the sweep
    script = executor._executor._make_submission_file_text("python -u -m submitit.core._submit %t", "uid")
    lines = set(script.splitlines())
    assert len(jobs) == 6 and f"#SBATCH --array=0-{len(jobs) - 1}%{len(jobs)}" in lines
    for line in ("#SBATCH --gpus-per-node=1", "#SBATCH --partition=gpu", "#SBATCH --time=240",
                 "#SBATCH --cpus-per-task=16", "#SBATCH --ntasks-per-node=1"):
        assert line in lines, (line, script)


@pytest.mark.parametrize("launcher", ["basic", "submitit_local", "joblib"])
def test_a_failed_job_fails_the_sweep(tmp_path, launcher):
    """Every job runs, the parts merge, then the sweep exits with the failed job's code (Hydra alone: 0)."""
    if launcher != "basic":
        pytest.importorskip(PLUGINS[launcher], reason="the `slurm` extra (Hydra launcher plugins) is not installed")
    res = run_py("-m", f"hydra/launcher={launcher}", "experiment=selftest,gemm", "backends=[matmul]", "dry_run=true",
                 f"results_dir={tmp_path / 'r'}", f"hydra.sweep.dir={tmp_path / 'm'}")
    assert res.returncode == 2, res.stderr[-3000:]
    last = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")][-1]
    assert last.startswith("error: 1 job(s) of the sweep failed: #1 (experiment=gemm") and "exit code 2" in last
    assert "Traceback" not in res.stderr


# code_hash: what a stored row depends on is the import closure of its experiment (issue 13).

def _closure(name: str) -> set[str]:
    from repro.measure.experiment import load_experiment
    from repro.run.runner import source_files

    return {p.relative_to(ROOT).as_posix() for p in source_files(load_experiment(name))}


def test_code_hash_covers_the_experiments_import_closure():
    fa = _closure("flash_attention")
    for needed in ("experiments/flash_attention.py", "experiments/vendor.py", "repro/measure/experiment.py",
                   "repro/measure/case.py", "repro/measure/gate.py", "repro/measure/timer.py",
                   "repro/measure/cpu_timer.py", "repro/measure/settings.py", "repro/run/isolate.py",
                   "kernels/flash_attention.py", "kernels/triton/flash_attention.py"):
        assert needed in fa, needed
    assert "kernels/gemm.py" not in fa and "kernels/mla_decode.py" not in fa  # not imported by it
    assert "kernels/flash_attention.py" not in _closure("gemm")
    assert "experiments/_dsa.py" in _closure("dsa_topk") and "kernels/dsa_topk.py" in _closure("dsa_topk")
    assert not any(p.startswith("kernels/") for p in _closure("selftest"))


def test_import_closure_follows_function_level_and_relative_imports(tmp_path, monkeypatch):
    from repro.results import manifest
    from repro.run import runner

    files = {
        "experiments/__init__.py": "",
        "experiments/x.py": "import math\nfrom repro.contract import C\n\ndef build():\n    from kernels import a\n",
        "kernels/__init__.py": "",
        "kernels/a.py": "from .b import helper\n",
        "kernels/b.py": "helper = 1\n",
        "kernels/unused.py": "import kernels.a\n",
        "repro/__init__.py": "",
        "repro/contract.py": "C = 1\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    monkeypatch.setattr(manifest, "ROOT", tmp_path)
    closure = runner.import_closure([tmp_path / "experiments" / "x.py"])
    assert {p.relative_to(tmp_path).as_posix() for p in closure} == set(files) - {"kernels/unused.py"}
    before = manifest.code_hash(closure)
    (tmp_path / "kernels" / "unused.py").write_text("changed = True\n")
    assert manifest.code_hash(runner.import_closure([tmp_path / "experiments" / "x.py"])) == before
    (tmp_path / "kernels" / "b.py").write_text("helper = 2\n")
    assert manifest.code_hash(runner.import_closure([tmp_path / "experiments" / "x.py"])) != before


def test_a_sweep_records_its_time_and_the_next_one_is_estimated_from_it(tmp_path):
    import json

    res = run_py("experiment=selftest", "backends=[matmul,einsum]", "sizes=[16,24]", f"results_dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-2000:]
    (manifest,) = list((tmp_path / "cpu").glob("env-*.json"))
    sweep = json.loads(manifest.read_text())["sweep"]
    assert sweep["experiment"] == "selftest" and sweep["rows"] == 4 and sweep["cases"] == 2
    assert sweep["wall_s"] >= sweep.get("isolated_s", 0) >= 0 and "sweep time" in res.stdout
    out = subprocess.run([sys.executable, "-m", "repro.run.estimate", "--results", str(tmp_path), "selftest", "gemm"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "estimate: about" in out and "selftest: about" in out and "4 rows" in out
    assert "gemm: no earlier sweep recorded" in out
