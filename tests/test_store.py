"""The results contract: schema, replacement, resume keys, atomic writes, damaged files."""
from __future__ import annotations

import pandas as pd
import pytest

from repro.results.store import REQUIRED, ResultsStore, StoreError, case_key


def row(case="M=1", backend="tilelang", status="ok", code="c1", env="e1", **extra):
    return {"experiment": "gemm", "case": case, "backend": backend, "status": status, "median_ms": 1.0,
            "tflops": 2.0, "run_id": "r1", "code_hash": code, "env_key": env, **extra}


def test_case_key_is_canonical():
    assert case_key({"N": 2, "M": 1, "causal": True, "x": 2.0}) == "M=1,N=2,causal=true,x=2"


def test_write_then_reload(tmp_path):
    s = ResultsStore(tmp_path, "h100", "gemm")
    s.write([row(), row(backend="cublas")])
    df = pd.read_csv(tmp_path / "h100" / "gemm.csv")
    assert list(df.columns[: len(REQUIRED)]) == list(REQUIRED)
    assert len(ResultsStore(tmp_path, "h100", "gemm").df) == 2


def test_rows_not_rewritten_keep_their_figures_to_the_last_digit(tmp_path):
    """Writing one backend's row reads and writes back the others: their figures must not move
    (pandas 2 parses floats to within one ulp unless asked for round_trip)."""
    s = ResultsStore(tmp_path, "h100", "gemm")
    s.write([row(median_ms=0.9210879802703857, tflops=0.002275581909756011, rel_l2=0.0006197690963745117)])
    before = (tmp_path / "h100" / "gemm.csv").read_text().splitlines()[1]
    ResultsStore(tmp_path, "h100", "gemm").write([row(backend="cublas", median_ms=0.5)])
    after = (tmp_path / "h100" / "gemm.csv").read_text().splitlines()
    assert before in after and "0.9210879802703857" in before


def test_rewrite_replaces_the_same_case_and_backend(tmp_path):
    s = ResultsStore(tmp_path, "h100", "gemm")
    s.write([row(status="error")])
    s.write([row(status="ok", median_ms=0.5)])
    df = ResultsStore(tmp_path, "h100", "gemm").df
    assert len(df) == 1 and df.iloc[0]["status"] == "ok"


def test_resume_needs_same_code_and_environment(tmp_path):
    s = ResultsStore(tmp_path, "h100", "gemm")
    s.write([row(), row(case="M=2", status="error")])
    assert s.is_done("M=1", "tilelang", "c1", "e1")
    assert not s.is_done("M=1", "tilelang", "c2", "e1")  # code changed
    assert not s.is_done("M=1", "tilelang", "c1", "e2")  # environment changed
    assert not s.is_done("M=2", "tilelang", "c1", "e1")  # errors are measured again


def test_unknown_status_is_refused(tmp_path):
    with pytest.raises(StoreError):
        ResultsStore(tmp_path, "h100", "gemm").write([row(status="fast")])


@pytest.mark.parametrize("content", ["", "experiment,case\ngemm,M=1\n",
                                     "experiment,case,backend,status,median_ms,tflops,run_id\ngemm,a,b,weird,1,1,r\n"])
def test_damaged_file_is_reported_not_overwritten(tmp_path, content):
    path = tmp_path / "h100" / "gemm.csv"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(StoreError):
        ResultsStore(tmp_path, "h100", "gemm")
    assert path.read_text() == content


def test_no_temporary_files_left(tmp_path):
    ResultsStore(tmp_path, "h100", "gemm").write([row()])
    assert [p.name for p in (tmp_path / "h100").iterdir()] == ["gemm.csv"]


# The schema's one owner: statuses, the typed row, published names, row checks on read and write.

from repro.results.store import STATUSES, ResultRow, Status, parse_case, read_results  # noqa: E402


def test_status_vocabulary_is_the_enum():
    assert STATUSES == ("ok", "incorrect", "skipped", "error", "oom", "timeout", "reported")
    assert [s.value for s in Status] == list(STATUSES) and Status.OK == "ok" and f"{Status.OOM}" == "oom"


def test_case_strings_round_trip():
    params = {"M": 1024, "causal": False, "dtype": "bf16", "scale": 0.5}
    assert parse_case(case_key(params)) == params


def test_typed_row_writes_the_contract(tmp_path):
    r = ResultRow(experiment="gemm", case="M=1", backend="tilelang", status=Status.OK, run_id="r1",
                  params={"M": 1}, median_ms=1.0, tflops=2.0, code_hash="c1", env_key="e1")
    assert r.to_dict()["status"] == "ok" and type(r.to_dict()["status"]) is str and r.to_dict()["M"] == 1
    s = ResultsStore(tmp_path, "h100", "gemm")
    s.write([r])
    df = ResultsStore(tmp_path, "h100", "gemm").df
    assert df.iloc[0]["status"] == "ok" and df.iloc[0]["M"] == 1 and s.is_done("M=1", "tilelang", "c1", "e1")


def test_published_rows_have_backend_names_of_their_own():
    r = ResultRow.published("flash_attention", {"seq_q": 512}, "fa3", "r1", "FA3 paper", tflops=497.0)
    assert (r.backend, r.status, r.case) == ("fa3_paper", Status.REPORTED, "seq_q=512")
    with pytest.raises(StoreError, match="fa3_paper"):  # a published row under a measured name
        ResultRow(experiment="e", case="c", backend="fa3", status="reported", run_id="r1", tflops=1.0)
    with pytest.raises(StoreError, match="published backend name"):  # and a measurement under a published one
        ResultRow(experiment="e", case="c", backend="fa3_paper", status="ok", run_id="r1", median_ms=1.0)


def test_published_and_measured_rows_never_replace_each_other(tmp_path):
    s = ResultsStore(tmp_path, "h100", "gemm")
    s.write([row()])
    with pytest.raises(StoreError, match="refusing to write"):  # e.g. a sweep's start refreshing published rows
        s.write([row(status="reported", source="paper")])
    s.write([row(backend="cublas_paper", status="reported", source="paper")])
    with pytest.raises(StoreError, match="refusing to write"):  # and a measurement over a published row
        s.write([row(backend="cublas_paper")])
    s.drop_status(Status.REPORTED)
    s.write([row(backend="cublas_paper", status="reported", source="paper")])
    df = ResultsStore(tmp_path, "h100", "gemm").df.set_index("backend")
    assert df.loc["tilelang", "status"] == "ok" and df.loc["cublas_paper", "status"] == "reported"


def test_experiments_publish_under_their_own_names(tmp_path):
    from omegaconf import OmegaConf

    from experiments.flash_attention import EXPERIMENT as FA
    from experiments.mla_decode import EXPERIMENT as MLA
    from repro.run.runner import _reported_rows

    cfg = OmegaConf.create({"dtypes": ["fp16", "bf16"], "dtype": None})
    for exp, measured in ((FA, {"fa2", "fa3", "cudnn", "triton"}), (MLA, {"flash_mla"})):
        rows = _reported_rows(exp, cfg, "r1", {"name": "h100"})
        names = {r.backend for r in rows}
        assert names == {f"{b}_paper" for b in measured}
        assert not names & {b.name for b in exp.backends}  # never a measured backend's name
        store = ResultsStore(tmp_path, "h100", exp.name)
        store.write(rows)
        assert len(ResultsStore(tmp_path, "h100", exp.name).df) == len(rows)
    assert len(_reported_rows(FA, cfg, "r1", {"name": "h100"})) == 131  # every figure of the FA3 paper's chart


@pytest.mark.parametrize("bad, match", [
    ({"median_ms": "fast"}, "median_ms='fast' is not a number"),
    ({"tflops": "n/a"}, "is not a number"),
    ({"run_id": ""}, "empty run_id"),
    ({"backend": None}, "empty backend"),
    ({"median_ms": -1.0}, "not a positive time"),
    ({"median_ms": None, "tflops": None}, "without median_ms"),
    ({"status": "reported", "backend": "cublas_paper", "median_ms": None, "tflops": None}, "without a figure"),
])
def test_rows_with_missing_fields_or_non_numeric_figures_are_refused(tmp_path, bad, match):
    s = ResultsStore(tmp_path, "h100", "gemm")
    with pytest.raises(StoreError, match=match):
        s.write([{**row(), **bad}])
    assert not (tmp_path / "h100" / "gemm.csv").exists()


@pytest.mark.parametrize("line", [
    "gemm,M=2,tilelang,ok,fast,2.0,r1\n",  # a non-numeric time
    "gemm,M=2,tilelang,ok,1.0,2.0,\n",  # no run id
    "gemm,,tilelang,ok,1.0,2.0,r1\n",  # no case
    "gemm,M=2,cublas,reported,,300,r1\n",  # a published figure under a measured name
])
def test_damaged_rows_are_refused_on_read(tmp_path, line):
    path = tmp_path / "h100" / "gemm.csv"
    path.parent.mkdir(parents=True)
    content = "experiment,case,backend,status,median_ms,tflops,run_id\ngemm,M=1,tilelang,ok,1.0,2.0,r1\n" + line
    path.write_text(content)
    with pytest.raises(StoreError, match="move it aside"):
        read_results(path)
    with pytest.raises(StoreError):
        ResultsStore(tmp_path, "h100", "gemm")
    assert path.read_text() == content


def test_all_digit_ids_stay_text(tmp_path):
    s = ResultsStore(tmp_path, "h100", "gemm")
    s.write([row(code="123456", run_id="20261125")])
    df = read_results(tmp_path / "h100" / "gemm.csv")
    assert df.iloc[0]["run_id"] == "20261125"
    assert ResultsStore(tmp_path, "h100", "gemm").is_done("M=1", "tilelang", "123456", "e1")


def test_committed_results_pass_the_checks():
    from pathlib import Path

    from repro.report.load import HARDWARE_SIDE_TABLES

    root = Path(__file__).resolve().parents[1] / "results"
    paths = [p for p in sorted(root.glob("*/*.csv")) if p.stem not in HARDWARE_SIDE_TABLES]
    assert paths
    for path in paths:
        read_results(path)  # raises on damage


# A run refused before its first row leaves no manifest behind.

def _selftest_cfg(tmp_path):
    from tests.helpers import compose_config

    return compose_config("experiment=selftest", "backends=[matmul]", "sizes=[16]", "bench.isolate=false",
                          "bench.rep_ms=10", f"results_dir={tmp_path}")


def test_a_refused_run_writes_no_manifest(tmp_path):
    from repro.cli import EXIT_STORE, dispatch

    damaged = tmp_path / "cpu" / "selftest.csv"
    damaged.parent.mkdir(parents=True)
    damaged.write_text("experiment,case,backend,status,median_ms,tflops,run_id\nselftest,n=16,matmul,ok,1.0,1")  # cut
    assert dispatch(_selftest_cfg(tmp_path)) == EXIT_STORE
    assert sorted(p.name for p in (tmp_path / "cpu").iterdir()) == ["selftest.csv"]


def test_a_run_writes_its_manifest_with_its_rows(tmp_path):
    from repro.results.manifest import read_manifests
    from repro.run.runner import run

    assert run(_selftest_cfg(tmp_path)) == 0
    rows = read_results(tmp_path / "cpu" / "selftest.csv")
    manifests = read_manifests(tmp_path / "cpu")
    assert list(manifests) == sorted(set(rows["run_id"]))
