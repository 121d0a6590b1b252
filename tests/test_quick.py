"""The quick scoreboard: its plan, the regression rule, and the CPU self-test through the real path."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from repro.quick import plan as qp
from repro.quick.__main__ import main
from repro.quick.compare import REGRESSION, Ratio, regressed, score, table
from repro.results.store import read_results


def test_every_kernel_of_the_suite_is_on_the_board_with_an_off_grid_case():
    entries = qp.load_plan()
    assert {e.kernel for e in entries} >= {"gemm", "gemm_fp8", "flash_attention", "flash_attention_bwd",
                                            "mla_decode", "dsa_indexer", "dsa_topk", "sparse_mla"}
    for e in entries:
        assert 2 <= len(e.cases) <= 4, e.kernel
        assert any(c.off_grid for c in e.cases), e.kernel
        assert e.ours == "tilelang" and e.baselines
    keys = [c.key for e in entries for c in e.cases]
    assert len(keys) == len(set(keys))  # kernel= keeps kernels of one experiment apart


def test_bad_selection_and_bad_case_are_refused(tmp_path):
    with pytest.raises(qp.QuickConfigError, match="unknown kernel"):
        qp.load_plan(only=["nope"])
    bad = tmp_path / "quick.yaml"
    bad.write_text("kernels:\n  mla:\n    experiment: mla_decode\n    baselines: [flash_mla]\n    cases:\n"
                   "      - {grid: x, batch: 1, h_q: 7, s_q: 1, seqlen: 64, lengths: equal, dtype: bf16}\n")
    with pytest.raises(qp.QuickConfigError, match="h_q"):
        qp.load_plan(bad)
    assert main(["--only", "nope"]) == 2


@pytest.mark.parametrize("new, old, marked", [
    (Ratio(0.80, 0.78, 0.82), Ratio(1.00, 0.98, 1.02), True),    # a 20% fall, intervals apart
    (Ratio(1.00, 0.98, 1.02), Ratio(1.00, 0.98, 1.02), False),   # unchanged
    (Ratio(0.97, 0.96, 0.98), Ratio(1.00, 0.99, 1.01), False),   # within 5%
    (Ratio(0.80, 0.60, 1.05), Ratio(1.00, 0.98, 1.02), False),   # within the noise of the new trials
    (Ratio(0.80), Ratio(1.00), True),                             # no intervals: the 5% rule alone
    (Ratio(math.nan), Ratio(1.00), False),
])
def test_regression_rule(new, old, marked):
    assert regressed(new, old, 0.05) is marked


def _selftest(tmp_path, *extra) -> int:
    return main(["--selftest", "--results", str(tmp_path), *extra])


def test_selftest_runs_the_real_path_and_marks_a_planted_regression(tmp_path, capsys):
    assert _selftest(tmp_path) == 0
    record = tmp_path / "cpu" / "quick.csv"
    rows = read_results(record)
    assert set(rows["backend"]) == {"matmul", "einsum"} and (rows["status"] == "ok").all()
    assert rows["case"].str.contains("kernel=selftest").all()
    assert (rows.loc[rows["backend"] == "matmul", "schedule"] == "default").all()
    assert list(tmp_path.glob("cpu/env-*.json"))
    out = capsys.readouterr().out
    assert "[1/2] selftest" in out and "[2/2] selftest" in out and "estimate" in out

    # The timings of that real run are CPU noise; for a rule that must hold every time, our
    # kernel's trials are set to paired multiples of the baseline's (zero-width intervals).
    df = pd.read_csv(record, dtype=str)

    def with_ratio(ratio: float) -> pd.DataFrame:
        out = df.copy()
        for case in out["case"].unique():
            base = out.loc[(out["case"] == case) & (out["backend"] == "einsum"), "trial_ms"].iloc[0]
            ours = [float(x) / ratio for x in base.split(";")]
            mine = (out["case"] == case) & (out["backend"] == "matmul")
            out.loc[mine, "trial_ms"] = ";".join(f"{x:.6g}" for x in ours)
            out.loc[mine, "median_ms"] = f"{sorted(ours)[len(ours) // 2]:.6g}"
        return out

    previous = tmp_path / "previous.csv"
    with_ratio(2.0).to_csv(previous, index=False)
    args = ["--table", "--card", "cpu", "--previous", str(previous), "--fail-on-regression"]
    with_ratio(2.0).to_csv(record, index=False)  # unchanged: passes, --fail-on-regression too
    assert _selftest(tmp_path, *args) == 0
    assert REGRESSION not in capsys.readouterr().out
    with_ratio(1.95).to_csv(record, index=False)  # a 2.5% fall: within the 5% rule
    assert _selftest(tmp_path, *args) == 0
    assert REGRESSION not in capsys.readouterr().out
    with_ratio(0.2).to_csv(record, index=False)  # the same code 10x slower: the machine, not us
    assert _selftest(tmp_path, *args) == 0
    out = capsys.readouterr().out
    assert REGRESSION not in out and "-90% (same code)" in out
    planted = with_ratio(0.2)
    planted["code_hash"] = "0123456789ab"  # planted: our kernel changed and runs 10x slower
    planted.to_csv(record, index=False)
    assert _selftest(tmp_path, *args) == 5
    captured = capsys.readouterr()
    assert REGRESSION in captured.out and "n=64" in captured.err and "n=96" in captured.err
    assert _selftest(tmp_path, "--table", "--card", "cpu", "--previous", str(previous)) == 0  # marked, not failed


def test_a_ratio_that_fell_because_the_baseline_got_faster_is_not_ours():
    entries = qp.load_plan(selftest=True)
    key = entries[0].cases[0].key

    def rows(ours_ms, base_ms, code):
        return [{"case": key, "backend": b, "status": "ok", "median_ms": ms, "trial_ms": f"{ms};{ms};{ms}",
                 "code_hash": code} for b, ms in (("matmul", ours_ms), ("einsum", base_ms))]

    before = rows(1.0, 2.0, "aaaaaaaaaaaa")
    held = score(entries, rows(1.01, 1.5, "bbbbbbbbbbbb"), before)[0]  # ours held, the baseline 25% faster
    assert not held.regression and "baseline faster; ours -1%" in held.change
    slower = score(entries, rows(1.3, 2.0, "bbbbbbbbbbbb"), before)[0]  # ours 30% slower: ours
    assert slower.regression and REGRESSION in slower.change


def test_a_case_that_stopped_passing_is_a_regression():
    entries = qp.load_plan(selftest=True)
    key = entries[0].cases[0].key
    ok = {"case": key, "status": "ok", "median_ms": 1.0, "trial_ms": "1;1;1"}
    before = [{**ok, "backend": "matmul"}, {**ok, "backend": "einsum"}]
    now = [{"case": key, "backend": "matmul", "status": "incorrect"}, {**ok, "backend": "einsum"}]
    scores = score(entries, now, before)
    assert scores[0].regression and "now incorrect" in scores[0].change
    assert "| selftest |" in table(scores)


def test_the_report_reads_a_quick_record_as_a_side_table_not_an_experiment(tmp_path):
    """results/<card>/quick.csv sits beside the sweeps' files: the report loads it aside, so it
    never becomes an experiment of the ledger, the coverage table or the figures."""
    import shutil
    from pathlib import Path

    from repro.report.load import load

    fixtures = Path(__file__).parent / "fixtures" / "results"
    shutil.copytree(fixtures, tmp_path / "results")
    assert main(["--selftest", "--results", str(tmp_path / "q")]) == 0
    shutil.copy(tmp_path / "q" / "cpu" / "quick.csv", tmp_path / "results" / "h100" / "quick.csv")
    results = load(tmp_path / "results")
    assert "quick" not in results.experiments and "mla_decode" in results.experiments
    assert len(results.side["quick"]) == 4
