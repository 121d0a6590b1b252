"""`time_budget_s` (and `make measure BUDGET=...`) on CPU, through the harness self-test.

A run with a budget starts no case once the budget is spent (its first case always starts, the
case under way always ends), prints what is left and exits 0; the same command resumes with the
next case, so a record is finished in pieces with nothing measured twice and nothing lost.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from repro.results.store import read_results
from repro.run import runner
from tests.helpers import compose_config

ROOT = Path(__file__).resolve().parent.parent
SIZES = [8, 12, 16]
FAST = ["experiment=selftest", "backends=[matmul,einsum]", "bench.isolate=false", "bench.correctness_trials=1",
        "bench.trials=1", "bench.warmup_ms=1", "bench.rep_ms=1", "bench.min_reps=2", "bench.max_reps=4"]


def run_py(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def rows_of(root: Path):
    return read_results(root / "cpu" / "selftest.csv")


def sweeps_of(root: Path) -> list[dict]:
    """The `sweep` section of every run manifest, oldest first."""
    found = [json.loads(p.read_text()) for p in sorted((root / "cpu").glob("env-*.json"))]
    return [m["sweep"] for m in sorted(found, key=lambda m: m["timestamp"]) if "sweep" in m]


def test_a_spent_budget_stops_after_the_case_and_the_same_command_resumes(tmp_path):
    args = [*FAST, f"sizes=[{','.join(map(str, SIZES))}]", f"results_dir={tmp_path}"]
    # 1 ms: spent before the second case starts; the first always runs
    first = run_py(*args, "time_budget_s=0.001")
    assert first.returncode == 0, first.stderr[-3000:]
    assert ("[selftest] time budget 0.001 s spent after 1 of 3 cases; 2 cases (4 runs) left: "
            "run the same command again to resume") in first.stdout
    df1 = rows_of(tmp_path)
    assert sorted(df1["case"]) == ["dtype=fp32,n=8"] * 2 and set(df1["status"]) == {"ok"}
    (sweep,) = sweeps_of(tmp_path)
    assert sweep["budget_s"] == 0.001 and sweep["cases_left"] == 2 and sweep["runs_left"] == 4
    assert sweep["rows"] == 2 and sweep["cases"] == 1
    estimate = subprocess.run([sys.executable, "-m", "repro.run.estimate", "--results", str(tmp_path),
                               "--budget", "600", "selftest"], cwd=ROOT, capture_output=True, text=True,
                              timeout=60).stdout
    assert "4 runs left" in estimate and "in runs of 600 s: about 1" in estimate

    second = run_py(*args, "time_budget_s=0.001")  # the same command: continues with the next case
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 measured already, 4 to run" in second.stdout
    assert "time budget 0.001 s spent after 1 of 2 cases; 1 case (2 runs) left" in second.stdout
    df2 = rows_of(tmp_path).set_index(["case", "backend"])
    assert len(df2) == 4 and sorted(df2.index.get_level_values("case").unique()) == \
        ["dtype=fp32,n=12", "dtype=fp32,n=8"]
    kept = df2.loc[df1.set_index(["case", "backend"]).index]
    assert list(kept["run_id"]) == list(df1["run_id"]) and list(kept["timestamp"]) == list(df1["timestamp"])

    third = run_py(*args)  # no budget: finishes
    assert third.returncode == 0, third.stderr[-3000:]
    assert "4 measured already, 2 to run" in third.stdout and "time budget" not in third.stdout
    df3 = rows_of(tmp_path)
    assert len(df3) == 6 and not df3.duplicated(["case", "backend"]).any() and set(df3["status"]) == {"ok"}
    # one run per case, each case measured once
    assert df3.groupby("case")["run_id"].nunique().eq(1).all() and df3["run_id"].nunique() == 3
    assert [s.get("cases_left") for s in sweeps_of(tmp_path)] == [2, 1, None]


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _in_process(monkeypatch, tmp_path, budget, case_s: float, search_s: float | None = None, sizes=(8, 12, 16, 20, 24)):
    """run() with a clock that only moves when a case is measured (case_s each) or searched (search_s)."""
    clock = FakeClock()
    monkeypatch.setattr(runner, "_now", clock)
    measure = runner.measure_case

    def timed_case(*args, **kwargs):
        clock.t += case_s / 2  # a case under way is never cut, whatever the clock says halfway
        result = measure(*args, **kwargs)
        clock.t += case_s / 2
        return result

    monkeypatch.setattr(runner, "measure_case", timed_case)
    if search_s is not None:  # an experiment with a schedule search that takes search_s
        plan = runner.plan

        def with_search(cfg):
            exp, backends, cases = plan(cfg)
            return dataclasses.replace(exp, prepare=lambda cases, backends: None), backends, cases

        def search(*args):
            clock.t += search_s

        monkeypatch.setattr(runner, "plan", with_search)
        monkeypatch.setattr(runner, "_prepare", search)
    cfg = compose_config(*FAST, f"sizes=[{','.join(map(str, sizes))}]", f"results_dir={tmp_path}",
                         *([f"time_budget_s={budget}"] if budget is not None else []))
    return runner.run(cfg)


def test_the_clock_is_read_before_each_case_never_within_one(tmp_path, monkeypatch, capsys):
    # cases start at t = 0, 10, 20 (< 25 s) and end at 10, 20, 30; the fourth would start at 30
    assert _in_process(monkeypatch, tmp_path, 25, case_s=10) == 0
    out = capsys.readouterr().out
    assert "[selftest] time budget 25 s spent after 3 of 5 cases; 2 cases (4 runs) left" in out
    df = rows_of(tmp_path)
    assert len(df) == 6 and df.groupby("case")["backend"].nunique().eq(2).all()  # whole cases only
    assert sorted(df["case"].unique()) == ["dtype=fp32,n=12", "dtype=fp32,n=16", "dtype=fp32,n=8"]


def test_the_schedule_search_counts_and_the_first_case_still_runs(tmp_path, monkeypatch, capsys):
    assert _in_process(monkeypatch, tmp_path, 25, case_s=1, search_s=100) == 0
    out = capsys.readouterr().out
    assert "time budget 25 s spent after 1 of 5 cases; 4 cases (8 runs) left" in out
    assert sorted(rows_of(tmp_path)["case"].unique()) == ["dtype=fp32,n=8"]
    (sweep,) = sweeps_of(tmp_path)
    assert (sweep["budget_s"], sweep["cases_left"], sweep["runs_left"], sweep["rows"]) == (25, 4, 8, 2)


def test_an_unspent_budget_changes_nothing(tmp_path, monkeypatch, capsys):
    assert _in_process(monkeypatch, tmp_path, 1000, case_s=10) == 0
    assert "time budget" not in capsys.readouterr().out
    assert len(rows_of(tmp_path)) == 10
    (sweep,) = sweeps_of(tmp_path)
    assert (sweep["budget_s"], sweep["cases_left"], sweep["runs_left"]) == (1000, 0, 0)


@pytest.mark.parametrize("value", ["0", "-5", "abc", "true", "inf", "nan", "[600]"])
def test_a_bad_budget_is_refused(value):
    from repro.run.validate import ConfigError, check_run_keys

    with pytest.raises(ConfigError, match=r"^time_budget_s=.*a number of seconds > 0"):
        check_run_keys(compose_config("experiment=selftest", f"time_budget_s={value}"))


@pytest.mark.parametrize("multirun", [False, True])
def test_a_bad_budget_exits_2_with_one_error_line(tmp_path, multirun):
    res = run_py(*(["-m", f"hydra.sweep.dir={tmp_path / 'm'}"] if multirun else []), *FAST,
                 f"results_dir={tmp_path}", "time_budget_s=-1")
    assert res.returncode == 2, res.stderr[-2000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "time_budget_s=-1" in errors[0]
    assert not (tmp_path / "cpu").exists()


def test_a_sharded_sweep_honours_the_budget_per_job(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="the `slurm` extra is not installed")
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "++shard=0/2,1/2", *FAST,
            "sizes=[8,12,16,20]", f"results_dir={tmp_path / 'r'}", f"hydra.sweep.dir={tmp_path / 'm'}"]
    first = run_py(*args, "time_budget_s=0.001")
    assert first.returncode == 0, first.stderr[-3000:]
    for shard in ("0/2", "1/2"):
        assert re.search(rf"\[selftest shard {shard}\] time budget 0.001 s spent after 1 of 2 cases; "
                         r"1 case \(2 runs\) left", first.stdout), first.stdout[-3000:]
    df1 = rows_of(tmp_path / "r")
    assert len(df1) == 4 and df1["case"].nunique() == 2  # one case of each shard, merged
    second = run_py(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    df2 = rows_of(tmp_path / "r")
    assert len(df2) == 8 and not df2.duplicated(["case", "backend"]).any()
    kept = df2.set_index(["case", "backend"]).loc[df1.set_index(["case", "backend"]).index, "run_id"]
    assert list(kept) == list(df1["run_id"])


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_measure_stops_its_loop_once_the_budget_is_spent(tmp_path):
    make = ["make", "--no-print-directory", "-o", "setup", "-o", ".venv/.installed", "measure",
            f"PY={sys.executable}", f"RESULTS={tmp_path}"]
    bad = subprocess.run([*make, "EXPERIMENTS=selftest", "BUDGET=10m"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode != 0 and "error: BUDGET=10m: a whole number of seconds > 0" in bad.stderr
    assert not (tmp_path / "cpu").exists()
    # 1 s: the first experiment always starts and runs one case; the other two are not started
    res = subprocess.run([*make, "EXPERIMENTS=selftest selftest selftest", "BUDGET=1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[selftest] time budget 1 s spent after 1 of 4 cases" in res.stdout
    assert "measure: time budget 1 s spent; 1 of 3 experiment(s) run, not started: selftest selftest" in res.stdout
    assert "make measure BUDGET=1` again to resume" in res.stdout
    assert rows_of(tmp_path)["case"].nunique() == 1
