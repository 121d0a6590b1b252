"""Runs that must not damage the record, and failures that end in one `error:` line with the
documented exit code (the reliability issue's items 1, 2, 3, 7 and 8), through the self-test on CPU."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repro.results.store import ResultsStore, gate_of, looser_gate, read_results
from repro.run.plan import plan
from repro.run.validate import ConfigError, default_settings
from tests.helpers import compose_config

ROOT = Path(__file__).resolve().parents[1]
FAST = ["experiment=selftest", "backends=[matmul]", "sizes=[16]", "bench.isolate=false", "bench.rep_ms=10"]


def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 300):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def one_error_line(res, code: int) -> str:
    """The documented exit code and exactly one `error:` line on stderr, no traceback."""
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error")]
    assert res.returncode == code, res.stderr[-2000:]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "Traceback" not in res.stderr, res.stderr[-2000:]
    return errors[0]


def selftest(tmp_path, *extra: str):
    return compose_config(*FAST, f"results_dir={tmp_path}", *extra)


def rows(tmp_path):
    return read_results(tmp_path / "cpu" / "selftest.csv").set_index(["case", "backend"])


# --- item 1: a seed the generators cannot take; a failing rerun keeps the ok rows --------------------

@pytest.mark.parametrize("seed", ["12345678901234567890", str(2**63 - 1), str(2**64)])
def test_a_seed_the_generators_cannot_take_is_refused_before_running(seed):
    with pytest.raises(ConfigError, match="bench.seed"):
        plan(compose_config("experiment=gemm", f"bench.seed={seed}"))


def test_the_largest_seed_allowed_works_for_every_trial():
    import torch

    from repro.run.validate import settings_of

    cfg = compose_config("experiment=gemm", f"bench.seed={2**63 - 3}")
    plan(cfg)  # accepted: 3 correctness trials fit below 2**63
    settings = settings_of(cfg)
    for trial in range(settings.correctness_trials):  # the gate draws trial t from seed + t
        torch.Generator().manual_seed(settings.seed + trial)


def test_a_failing_rerun_with_redo_keeps_the_ok_rows(tmp_path, capsys, monkeypatch):
    from repro.run import plan as plan_module
    from repro.run.runner import run

    assert run(selftest(tmp_path)) == 0
    first = rows(tmp_path)
    assert set(first["status"]) == {"ok"}
    real = plan_module.load_experiment

    def failing(name):  # every backend errors, as with a seed torch refuses
        def make_inputs(case, seed, device):
            raise ValueError("Overflow when unpacking long long")
        return dataclasses.replace(real(name), make_inputs=make_inputs)

    monkeypatch.setattr(plan_module, "load_experiment", failing)
    capsys.readouterr()
    assert run(selftest(tmp_path, "redo=true")) == 0
    out = capsys.readouterr().out
    assert "kept the ok row of (dtype=fp32,n=16, matmul)" in out
    after = rows(tmp_path)
    assert set(after["status"]) == {"ok"} and list(after["run_id"]) == list(first["run_id"])


# --- item 2: the gate is part of a row's identity -----------------------------------------------------

def test_the_gate_is_in_the_rows_the_manifest_and_the_resume_key(tmp_path, capsys):
    from repro.results.manifest import read_manifests
    from repro.results.store import gate_key, gate_settings
    from repro.run.runner import run

    assert run(selftest(tmp_path)) == 0
    from repro.run.validate import default_gate

    default = gate_of(default_settings("selftest"), "fp32")
    assert default_gate("selftest", {"n": 16, "dtype": "fp32"}) == default  # what the report compares with
    row = rows(tmp_path).iloc[0]
    assert row["gate"] == default and looser_gate(row["gate"], default) == []
    (manifest,) = read_manifests(tmp_path / "cpu").values()
    settings = default_settings("selftest")
    assert manifest["gate"] == {**gate_settings(settings), "key": gate_key(settings)}

    capsys.readouterr()
    assert run(selftest(tmp_path)) == 0
    assert "1 measured already, 0 to run" in capsys.readouterr().out
    assert run(selftest(tmp_path, "bench.tolerance.fp32.rel_l2=0.5")) == 0  # a one-off looser gate
    assert "0 measured already, 1 to run" in capsys.readouterr().out  # not resumed onto the strict row
    loose = rows(tmp_path).iloc[0]["gate"]
    assert looser_gate(loose, default) == ["rel_l2 0.5 > 0.0001"]  # what the report refuses
    assert run(selftest(tmp_path)) == 0
    assert "0 measured already, 1 to run" in capsys.readouterr().out  # nor the strict run onto the loose row


# --- item 3: the self-test never writes into the record ---------------------------------------------

def test_the_selftest_writes_under_outputs_unless_told_otherwise(tmp_path):
    assert compose_config("experiment=selftest").results_dir == "outputs/selftest"
    assert compose_config("experiment=gemm").results_dir == "results"
    assert compose_config("experiment=selftest", "results_dir=elsewhere").results_dir == "elsewhere"
    res = run_cli(*FAST, cwd=tmp_path)  # the default results_dir, from a scratch folder
    assert res.returncode == 0, res.stderr[-2000:]
    assert not (tmp_path / "results").exists()
    assert len(read_results(tmp_path / "outputs" / "selftest" / "cpu" / "selftest.csv")) == 1


def test_results_dir_of_names_known_experiments():
    with pytest.raises(ConfigError, match="results_dir_of.nope: unknown experiment"):
        plan(compose_config("experiment=gemm", "+results_dir_of.nope=x"))


# --- item 7: one line and the documented code -------------------------------------------------------

def test_a_huge_shard_count_is_one_line_exit_2(tmp_path):
    res = run_cli("experiment=gemm", "shard=1/99999999999999999999999", "dry_run=true")
    assert "at most 4096 shares" in one_error_line(res, 2)


def test_an_override_key_longer_than_a_file_name_is_one_line_exit_2(tmp_path):
    line = one_error_line(run_cli("experiment=gemm", "a" * 300 + "=1", "dry_run=true"), 2)
    assert "unknown key" in line and len(line) < 1000


def _dangling(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    return tmp_path / "dangling", "symbolic link to"


def _loop(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    return tmp_path / "a", "loop of symbolic links"


def _too_long(tmp_path):
    return tmp_path / ("b" * 300), "longer than the file system allows"


@pytest.mark.parametrize("make", [_dangling, _loop, _too_long])
def test_a_results_dir_that_cannot_be_a_folder_is_exit_2(tmp_path, capsys, make):
    from repro.cli import EXIT_CONFIG, dispatch

    path, says = make(tmp_path)
    assert dispatch(selftest(path)) == EXIT_CONFIG
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith("error: results_dir=") and says in errors[0]


def test_junk_appended_to_a_results_file_is_one_short_line_exit_4(tmp_path):
    res = run_cli(*FAST, f"results_dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-2000:]
    path = tmp_path / "cpu" / "selftest.csv"
    with open(path, "a") as fh:
        fh.write("selftest,n=99,matmul,ok," + "y" * 41000 + ",2,r1\n")
        fh.writelines(f"selftest,n={i},matmul,ok,{'a' if i % 2 else '1'},2,r1\n" for i in range(100, 200000))
    line = one_error_line(run_cli(*FAST, f"results_dir={tmp_path}"), 4)
    assert len(line) < 1000 and str(path) in line
    assert "Warning" not in run_cli(*FAST, f"results_dir={tmp_path}").stderr


def test_a_duplicated_header_is_named_with_its_line_exit_4(tmp_path):
    assert run_cli(*FAST, f"results_dir={tmp_path}").returncode == 0
    path = tmp_path / "cpu" / "selftest.csv"
    path.write_text(path.read_text() + path.read_text().splitlines()[0] + "\n")
    assert "duplicated header at line 3" in one_error_line(run_cli(*FAST, f"results_dir={tmp_path}"), 4)


def _rows_in(path: Path) -> int:
    try:
        return len(read_results(path))
    except Exception:
        return 0


@pytest.mark.parametrize("isolate", ["false", "true"])
def test_ctrl_c_keeps_the_rows_says_how_to_resume_and_exits_130(tmp_path, isolate):
    sizes = ",".join(str(n) for n in range(8, 40))
    args = [sys.executable, str(ROOT / "run.py"), "experiment=selftest", "backends=[matmul]", f"sizes=[{sizes}]",
            f"bench.isolate={isolate}", "bench.rep_ms=100", "bench.max_reps=100000",  # ~0.1 s a case: time to interrupt
            "bench.correctness_trials=1", f"results_dir={tmp_path}"]
    # SIGINT at its default in the child even when this test runs in a background job, where the
    # shell has it ignored and every child would inherit that (Python then installs no handler).
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    path, deadline = tmp_path / "cpu" / "selftest.csv", time.monotonic() + 240
    while _rows_in(path) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    out, err = proc.communicate(timeout=120)
    res = subprocess.CompletedProcess(args, proc.returncode, out, err)
    line = one_error_line(res, 130)
    kept = len(read_results(path))
    assert line.startswith(f"error: interrupted: {kept} of the 32 row(s)") and "run the same command again" in line
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{kept} measured already, {32 - kept} to run" in again.stdout


# --- item 8: a sweep is checked whole before its first job -------------------------------------------

def test_a_bad_value_in_a_later_job_stops_the_sweep_before_any_job_measures(tmp_path):
    res = run_cli("-m", *FAST, "bench.seed=1,12345678901234567890", f"results_dir={tmp_path / 'r'}",
                  f"hydra.sweep.dir={tmp_path / 'm'}")
    line = one_error_line(res, 2)
    assert "job #1 of the sweep" in line and "bench.seed=12345678901234567890" in line and "no job was run" in line
    assert not (tmp_path / "r").exists()  # job #0 did not measure


@pytest.mark.parametrize("sweep", ["sizes=range(5,5)", "experiment=glob(zz*)"])
def test_a_sweep_with_no_job_is_exit_2(tmp_path, sweep):
    res = run_cli("-m", "experiment=selftest", sweep, f"hydra.sweep.dir={tmp_path / 'm'}")
    assert "the sweep has no job to run" in one_error_line(res, 2) and sweep in res.stderr


def test_a_glob_sweep_still_runs(tmp_path):
    res = run_cli("-m", "experiment=glob(selftes*)", "backends=[matmul]", "dry_run=true",
                  f"hydra.sweep.dir={tmp_path / 'm'}")
    assert res.returncode == 0 and "selftest  dtype=fp32,n=16" in res.stdout, res.stderr[-2000:]


def test_a_stored_failure_is_not_resumed_onto(tmp_path):
    """The held-back error is not stored, so the ok row still counts as measured."""
    store = ResultsStore(tmp_path, "cpu", "selftest")
    store.write([{"experiment": "selftest", "case": "n=1", "backend": "matmul", "status": "ok", "median_ms": 1.0,
                  "tflops": 1.0, "gbps": 1.0, "run_id": "r1", "code_hash": "c", "env_key": "e", "gate": "trials=3"}])
    store.write([{"experiment": "selftest", "case": "n=1", "backend": "matmul", "status": "timeout",
                  "run_id": "r2", "code_hash": "c", "env_key": "e", "gate": "trials=3"}])
    assert ResultsStore(tmp_path, "cpu", "selftest").is_done("n=1", "matmul", "c", "e", "trials=3")
