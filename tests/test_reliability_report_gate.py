"""The report never stands behind a row judged by a looser gate than its experiment defines.

A row records the gate it passed (`gate`: trials, rel_l2, max_abs_rel for its dtype); the report
compares it with configs/bench/default.yaml under configs/experiment/<name>.yaml (for GEMM bf16:
3 trials, rel_l2 0.01, max_abs_rel 0.05) and refuses a tree holding a more lenient ok row.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from repro.report import build
from repro.report.__main__ import main
from repro.report.load import load
from tests.helpers import tree_files

RUN = "run-a"
STRICT = "max_abs_rel=0.05,rel_l2=0.01,trials=3"  # GEMM's own bf16 gate


def _results(root: Path, gates: dict[int, str], status: str = "ok", case: str = "M={m},dtype=bf16") -> Path:
    folder = root / "results" / "h100"
    folder.mkdir(parents=True)
    with open(folder / "gemm.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["experiment", "case", "backend", "status", "median_ms",
                                                    "tflops", "run_id", "gate"])
        writer.writeheader()
        for m in (1024, 4096):
            for i, (backend, ms) in enumerate((("cublas", 1.0), ("tilelang", 0.8))):
                row = 2 * (m == 4096) + i
                writer.writerow({"experiment": "gemm", "case": case.format(m=m), "backend": backend,
                                 "status": status if row in gates else "ok", "median_ms": ms, "tflops": 2 / ms,
                                 "run_id": RUN, "gate": gates.get(row, STRICT)})
    (folder / f"env-{RUN}.json").write_text(json.dumps({"run_id": RUN, "timestamp": "2026-01-02T03:04:05"}))
    return root / "results"


@pytest.mark.parametrize("gate, says", [
    ("max_abs_rel=0.05,rel_l2=0.5,trials=3", "rel_l2 0.5"),
    ("max_abs_rel=1,rel_l2=0.01,trials=3", "max_abs_rel 1"),
    ("max_abs_rel=0.05,rel_l2=0.01,trials=1", "trial"),
    ("trials=3", "rel_l2"),
])
def test_a_row_gated_more_loosely_is_refused(tmp_path, capsys, monkeypatch, gate, says):
    monkeypatch.setattr(build, "make_figures", lambda *args: [])
    results = _results(tmp_path, {3: gate})
    out = tmp_path / "paper"
    out.mkdir()
    (out / "README.md").write_text("the paper as it was\n")
    assert main(["--results", str(results), "--out", str(out)]) == 4
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 1 and "results/h100/gemm.csv: row 4 ('M=4096,dtype=bf16', 'tilelang')" in err[0]
    assert "looser gate" in err[0] and says in err[0] and "paper was left as it was" in err[0]
    assert tree_files(out) == {"README.md": b"the paper as it was\n"}


def test_rows_gated_as_strictly_or_more_pass(tmp_path):
    stricter = "max_abs_rel=0.01,rel_l2=0.001,trials=5"
    assert len(load(_results(tmp_path, {3: stricter})).rows("gemm")) == 4


def test_a_failed_row_is_not_judged_by_its_gate(tmp_path):
    results = load(_results(tmp_path, {3: "max_abs_rel=1,rel_l2=1,trials=1"}, status="incorrect"))
    assert len(results.rows("gemm")) == 4


def test_rows_from_before_gates_were_stored_pass(tmp_path):
    assert len(load(_results(tmp_path, {3: ""})).rows("gemm")) == 4


def test_without_a_dtype_the_loosest_limit_of_the_experiment_is_the_bar(tmp_path):
    from repro.report.checks import reference_gate

    assert reference_gate("gemm", None) == "max_abs_rel=0.05,rel_l2=0.01,trials=3"  # bf16's, the loosest
    assert reference_gate("gemm", "fp16") == "max_abs_rel=0.01,rel_l2=0.002,trials=3"
    assert reference_gate("no_such_experiment", "fp16") is None
    with pytest.raises(Exception, match="looser gate"):
        load(_results(tmp_path, {1: "max_abs_rel=0.06,rel_l2=0.01,trials=3"}, case="M={m}"))
