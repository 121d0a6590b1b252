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
