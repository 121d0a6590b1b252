"""The store's own rules on rows: what a row may hold, what may replace what, and the gate it passed.

Each test here failed before the rule it checks existed (the reliability issue's items 1, 2, 4, 5, 7).
"""
from __future__ import annotations

import math
import warnings

import pandas as pd
import pytest

from repro.results.store import (ResultsStore, StoreError, atomic_write_csv, gate_key, gate_of, gate_settings,
                                 looser_gate, newest_rows, parse_gate, read_results)
from repro.run.merge import merge_all

HEADER = "experiment,case,backend,status,median_ms,tflops,run_id,gbps\n"


def row(case="M=1", backend="tilelang", status="ok", code="c1", env="e1", **extra):
    return {"experiment": "gemm", "case": case, "backend": backend, "status": status, "median_ms": 1.0,
            "tflops": 2.0, "gbps": 3.0, "run_id": "r1", "code_hash": code, "env_key": env, **extra}


def failure(status="error", code="c1", **extra):
    return row(status=status, code=code, median_ms=None, tflops=None, gbps=None, run_id="r2",
               error="ValueError: Overflow when unpacking long long", **extra)


def stored(tmp_path, part=None) -> pd.DataFrame:
    return ResultsStore(tmp_path, "h100", "gemm", part).df.set_index(["case", "backend"])


# --- item 1: a failure never replaces an ok row measured by the same code --------------------------

@pytest.mark.parametrize("status", ["error", "oom", "timeout"])
def test_a_failure_never_replaces_an_ok_row_of_the_same_code(tmp_path, status):
    store = ResultsStore(tmp_path, "h100", "gemm")
    assert store.write([row()]) == []
    notes = store.write([failure(status)])
    assert len(notes) == 1 and "kept the ok row of (M=1, tilelang)" in notes[0] and status in notes[0]
    assert "\n" not in notes[0]
    df = stored(tmp_path)
    assert df.loc[("M=1", "tilelang"), "status"] == "ok" and df.loc[("M=1", "tilelang"), "run_id"] == "r1"


def test_a_failure_of_other_code_or_an_incorrect_verdict_still_replaces_it(tmp_path):
    store = ResultsStore(tmp_path, "h100", "gemm")
    store.write([row(), row(case="M=2")])
    assert store.write([failure(code="c2")]) == []  # the code changed: the error is news
    assert store.write([row(case="M=2", status="incorrect", median_ms=None, tflops=None, gbps=None,
                            rel_l2=0.5)]) == []  # a verdict, not a failure
    df = stored(tmp_path)
    assert df.loc[("M=1", "tilelang"), "status"] == "error"
    assert df.loc[("M=2", "tilelang"), "status"] == "incorrect"


def test_a_part_file_does_not_store_a_failure_over_the_main_files_ok_row(tmp_path):
    ResultsStore(tmp_path, "h100", "gemm").write([row()])
    part = ResultsStore(tmp_path, "h100", "gemm", part="job1")
    assert len(part.write([failure(), row(case="M=2")])) == 1
    merge_all(tmp_path)
    df = stored(tmp_path)
    assert df.loc[("M=1", "tilelang"), "status"] == "ok" and df.loc[("M=2", "tilelang"), "status"] == "ok"


def test_a_merge_keeps_the_ok_row_over_a_newer_failure_of_the_same_code(tmp_path):
    ResultsStore(tmp_path, "h100", "gemm").write([row(timestamp="2026-01-01T00:00:00+00:00")])
    part = tmp_path / "h100" / "parts" / "gemm.old.csv"  # written by a harness without the rule
    atomic_write_csv(pd.DataFrame([failure(timestamp="2026-01-02T00:00:00+00:00")]), part)
    merge_all(tmp_path)
    assert stored(tmp_path).loc[("M=1", "tilelang"), "status"] == "ok"
    frames = [pd.DataFrame([row()]), pd.DataFrame([failure()])]
    assert list(newest_rows(frames)["status"]) == ["ok"]


# --- item 2: the gate a row passed is part of its identity -------------------------------------------

def _settings(**tolerance):
    from repro.run.validate import default_settings

    base = default_settings("gemm")
    tol = dict(base.tolerance)
    for dtype, rel in tolerance.items():
        tol[dtype] = type(tol[dtype])(rel, tol[dtype].max_abs_rel)
    return base.replace(tolerance=tol)


def test_a_rows_gate_names_the_limits_of_its_dtype():
    settings = _settings()
    gate = gate_of(settings, "fp16")
    assert parse_gate(gate) == {"max_abs_rel": 0.01, "rel_l2": 0.002, "trials": 3}  # configs/bench/default.yaml
    assert gate_of(settings, "int4") == "trials=3"  # no tolerance for it: the trials still count
    assert gate_settings(settings)["tolerance"]["fp16"] == {"rel_l2": 0.002, "max_abs_rel": 0.01}
    assert gate_key(settings) == gate_key(_settings()) != gate_key(_settings(fp16=0.5))


def test_looser_gates_are_named_and_stricter_ones_pass():
    default = gate_of(_settings(), "fp16")
    assert looser_gate(gate_of(_settings(fp16=0.5), "fp16"), default) == ["rel_l2 0.5 > 0.002"]
    assert looser_gate(gate_of(_settings(fp16=1e-4), "fp16"), default) == []
    assert looser_gate(gate_of(_settings().replace(correctness_trials=1), "fp16"), default) == \
        ["1 correctness trial(s) < 3"]
    assert looser_gate(None, default) and looser_gate(float("nan"), default)  # not recorded: not trusted


def test_resume_needs_the_same_gate(tmp_path):
    strict, loose = gate_of(_settings(), "fp16"), gate_of(_settings(fp16=0.5), "fp16")
    store = ResultsStore(tmp_path, "h100", "gemm")
    store.write([row(gate=loose)])
    assert store.is_done("M=1", "tilelang", "c1", "e1", loose)
    assert not store.is_done("M=1", "tilelang", "c1", "e1", strict)  # gated differently: measured again
    assert read_results(tmp_path / "h100" / "gemm.csv").loc[0, "gate"] == loose  # kept as text
    ResultsStore(tmp_path, "h100", "gemm").write([row(case="M=2")])
    assert not ResultsStore(tmp_path, "h100", "gemm").is_done("M=2", "tilelang", "c1", "e1", strict)


# --- item 4: impossible figures in an ok row --------------------------------------------------------

@pytest.mark.parametrize("bad, says", [
    ({"tflops": -1.0}, "tflops=-1.0"),
    ({"gbps": math.inf}, "gbps=inf"),
    ({"tflops": math.nan}, "tflops=nan"),
    ({"median_ms": math.nan, "rel_l2": 0.001}, "median_ms=nan"),
    ({"tflops": 0.0, "gbps": 0.0}, "it did no work"),
    ({"tflops": 0.0, "gbps": None}, "it did no work"),
    ({"speedup": 0.0}, "speedup=0.0"),
    ({"rel_l2": math.inf}, "rel_l2=inf"),
    ({"tflops_frac": -0.5}, "tflops_frac=-0.5"),
    ({"reps": 0}, "reps=0"),
    ({"seed": 2**64}, "seed="),
    ({"M": math.inf}, "M=inf"),
])
def test_impossible_figures_in_an_ok_row_are_refused_on_write(tmp_path, bad, says):
    with pytest.raises(StoreError, match="refusing to write") as err:
        ResultsStore(tmp_path, "h100", "gemm").write([{**row(), **bad}])
    assert says in str(err.value)
    assert not (tmp_path / "h100" / "gemm.csv").exists()


def test_possible_figures_pass(tmp_path):
    store = ResultsStore(tmp_path, "h100", "gemm")
    store.write([row(tflops=0.0, gbps=4100.0, tflops_frac=0.0),  # a copy does no flops
                 row(case="M=2", tflops_frac=math.nan, speedup_lo=math.nan),  # not known: empty
                 row(case="M=3", status="incorrect", median_ms=None, tflops=None, gbps=None, rel_l2=math.inf)])
    assert len(read_results(tmp_path / "h100" / "gemm.csv")) == 3


@pytest.mark.parametrize("line, says", [
    ("gemm,M=2,tilelang,ok,nan,2.0,r1,3.0\n", "median_ms=nan"),
    ("gemm,M=2,tilelang,ok,1.0,NaN,r1,3.0\n", "tflops=nan"),
    ("gemm,M=2,tilelang,ok,1.0,inf,r1,3.0\n", "tflops=inf"),
    ("gemm,M=2,tilelang,ok,1.0,2.0,r1,-2\n", "gbps=-2.0"),
    ("gemm,M=2,tilelang,ok,1.0,0,r1,0\n", "it did no work"),
])
def test_impossible_figures_in_an_ok_row_are_refused_on_read(tmp_path, line, says):
    path = tmp_path / "h100" / "gemm.csv"
    path.parent.mkdir(parents=True)
    path.write_text(HEADER + "gemm,M=1,tilelang,ok,1.0,2.0,r1,3.0\n" + line)
    with pytest.raises(StoreError, match="move it aside") as err:
        read_results(path)
    assert says in str(err.value)


def test_a_failure_rows_missing_figures_still_read(tmp_path):
    path = tmp_path / "h100" / "gemm.csv"
    path.parent.mkdir(parents=True)
    path.write_text(HEADER + "gemm,M=1,tilelang,error,,,r1,\ngemm,M=2,tilelang,incorrect,nan,,r1,\n")
    assert list(read_results(path)["status"]) == ["error", "incorrect"]


# --- item 5: damaged names --------------------------------------------------------------------------

@pytest.mark.parametrize("case, backend, says", [
    ("M=1", "tile\x07lang", "control character"),
    ("M=1", "tile lang", "is not a name"),
    ("M=1", "1tilelang", "is not a name"),
    ("M=1\x1b[2J", "tilelang", "control character"),
    ("M", "tilelang", "not key=value"),
    ("M=1,M=2", "tilelang", "names 'M' twice"),
    ("M=1,=2", "tilelang", "not key=value"),
    ("M= 1", "tilelang", "not key=value"),
])
def test_damaged_names_are_refused_on_read(tmp_path, case, backend, says):
    path = tmp_path / "h100" / "gemm.csv"
    path.parent.mkdir(parents=True)
    bad = pd.DataFrame([row(case=case, backend=backend)])
    content = HEADER + "gemm,M=1,tilelang,ok,1.0,2.0,r1,3.0\n" + bad[HEADER.strip().split(",")].to_csv(
        index=False, header=False, lineterminator="\n")
    path.write_text(content)
    with pytest.raises(StoreError, match="move it aside") as err:
        read_results(path)
    assert says in str(err.value) and "\x07" not in str(err.value) and "\x1b" not in str(err.value)
    with pytest.raises(StoreError):
        ResultsStore(tmp_path, "h100", "gemm").write([row()])  # nothing is added beside it
    assert path.read_text() == content


def test_a_damaged_name_is_exit_4_for_a_run(tmp_path, capsys):
    from repro.cli import EXIT_STORE, dispatch
    from tests.helpers import compose_config

    path = tmp_path / "cpu" / "selftest.csv"
    path.parent.mkdir(parents=True)
    path.write_text("experiment,case,backend,status,median_ms,tflops,run_id,gbps\n"
                    "selftest,\"dtype=fp32,n=16\",mat\tmul,ok,1.0,2.0,r1,3.0\n")
    cfg = compose_config("experiment=selftest", "backends=[matmul]", "sizes=[16]", "bench.isolate=false",
                         f"results_dir={tmp_path}")
    assert dispatch(cfg) == EXIT_STORE
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert len(errors) == 1 and "control character" in errors[0]


# --- item 7: damaged files say what is wrong in one short line --------------------------------------

def _results_file(tmp_path, extra: str):
    path = tmp_path / "h100" / "gemm.csv"
    ResultsStore(tmp_path, "h100", "gemm").write([row(), row(case="M=2")])
    with open(path, "a") as fh:
        fh.write(extra)
    return path


@pytest.mark.parametrize("junk", [
    "gemm,M=9,tilelang,ok," + "y" * 40000 + ",2,r1\n",  # one huge cell
    "".join(f"gemm,M={i + 10},tilelang,ok,{'a' if i % 2 else '1'},2,r1\n" for i in range(200000)),  # mixed types
    "x," * 20000 + "\n",  # too many fields
], ids=["huge cell", "mixed types", "too many fields"])
def test_junk_appended_to_a_results_file_is_one_short_error_and_no_warning(tmp_path, junk):
    path = _results_file(tmp_path, junk)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas' DtypeWarning would raise here
        with pytest.raises(StoreError) as err:
            read_results(path)
    assert len(str(err.value)) < 1000 and "\n" not in str(err.value)
    assert str(path) in str(err.value) and "move it aside" in str(err.value)


def test_a_duplicated_header_is_named_with_its_line(tmp_path):
    path = _results_file(tmp_path, "")
    header = path.read_text().splitlines()[0]
    with open(path, "a") as fh:
        fh.write(header + "\n")
    with pytest.raises(StoreError, match="duplicated header at line 4") as err:
        read_results(path)
    assert "unknown status" not in str(err.value)
