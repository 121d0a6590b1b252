"""The ledger judges a speed claim on the best TileLang implementation per case: the suite's kernel
(`tilelang`) or TileLang's own published example (`tilelang_upstream`), whichever is faster."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from repro.report import claims as ledger
from repro.report import verdicts as V
from repro.report.load import load
from repro.report.tables import build_table

ROOT = Path(__file__).resolve().parents[1]
RUN = "run-best"
BEST_OF = ["tilelang", "tilelang_upstream"]

# case M -> (tilelang, tilelang_upstream): a time in ms, or a status with no time; cuBLAS takes 1 ms.
CASES = {
    1: (0.8, 0.5),          # upstream faster: 2.0x (ours 1.25x)
    2: (0.5, 0.8),          # ours faster: 2.0x
    3: (0.9, "skipped"),    # upstream skipped: ours, 1.11x
    4: ("error", 0.4),      # only upstream ok: upstream, 2.5x
}
BEST = [2.0, 2.0, 1 / 0.9, 2.5]
OURS = [1.25, 2.0, 1 / 0.9]


def _row(m: int, backend: str, value) -> dict:
    ms = value if isinstance(value, float) else ""
    return {"experiment": "gemm", "case": f"M={m}", "backend": backend,
            "status": "ok" if isinstance(value, float) else value, "median_ms": ms,
            "tflops": 1.0 / ms if ms else "", "run_id": RUN, "M": m}


def _tree(root: Path, cases: dict = CASES) -> Path:
    folder = root / "results" / "h100"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for m, (ours, theirs) in cases.items():
        rows += [_row(m, "cublas", 1.0), _row(m, "tilelang", ours), _row(m, "tilelang_upstream", theirs)]
    with open(folder / "gemm.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (folder / f"env-{RUN}.json").write_text(json.dumps({"run_id": RUN, "timestamp": "2026-01-02T03:04:05"}))
    return root / "results"


def _rule(**overrides) -> dict:
    part = {"name": "gemm speed", "kind": "speedup", "experiment": "gemm", "hardware": ["h100"],
            "backend": "tilelang", "best_of": BEST_OF, "baseline": ["cublas"], "statistic": "geomean",
            "supported": 1.5, "partly": 1.2}
    part.update(overrides)
    return {"claims": {"X1": {"statement": "TileLang beats cuBLAS", "parts": [part]}}}


def _claim(root: Path, cases: dict = CASES, **overrides) -> ledger.ClaimResult:
    return ledger.evaluate(_rule(**overrides), load(_tree(root, cases)))[0]


def _geomean(values) -> float:
    return math.exp(sum(map(math.log, values)) / len(values))


def test_statistic_is_the_geomean_of_the_per_case_bests(tmp_path):
    part = _claim(tmp_path).parts[0]
    assert f"geomean {_geomean(BEST):.2f}x vs cublas over 4 cases" in part.numbers
    assert f"min {min(BEST):.2f}x, max {max(BEST):.2f}x" in part.numbers


def test_carried_by_counts_each_implementation(tmp_path):
    part = _claim(tmp_path).parts[0]
    # M=2, M=3 (upstream skipped) by ours; M=1 (faster) and M=4 (ours failed) by upstream.
    assert "carried by: tilelang 2 cases, tilelang_upstream 2 cases" in part.numbers
    assert "tilelang 2 cases, tilelang_upstream 2 cases" in part.brief


def test_our_own_ratio_stays_beside_the_best_of(tmp_path):
    part = _claim(tmp_path).parts[0]
    assert f"tilelang alone: geomean {_geomean(OURS):.2f}x over 3 cases" in part.numbers
    rule = part.details[0]
    assert "time(the faster of tilelang, tilelang_upstream)" in rule and "best-of statistic" in rule


def test_the_verdict_changes_when_upstream_carries_it(tmp_path):
    best = _claim(tmp_path / "best")
    assert _geomean(BEST) >= 1.5 > _geomean(OURS) >= 1.2
    assert best.verdict == V.SUPPORTED
    ours = ledger.evaluate(_rule(best_of=None), load(_tree(tmp_path / "ours")))[0]
    assert ours.verdict == V.PARTLY
    assert f"geomean {_geomean(OURS):.2f}x vs cublas over 3 cases" in ours.parts[0].numbers
    assert "carried by" not in ours.parts[0].numbers


def test_a_case_only_one_implementation_measured_ok_uses_that_one(tmp_path):
    only_upstream = {1: ("error", 0.5), 2: ("oom", 0.5)}
    part = _claim(tmp_path / "a", only_upstream).parts[0]
    assert "geomean 2.00x vs cublas over 2 cases" in part.numbers
    assert "carried by: tilelang 0 cases, tilelang_upstream 2 cases" in part.numbers
    assert "tilelang alone: no case measured ok" in part.numbers
    only_ours = {1: (0.5, "error"), 2: (0.5, "error")}
    part = _claim(tmp_path / "b", only_ours).parts[0]
    assert "geomean 2.00x vs cublas over 2 cases" in part.numbers
    assert "carried by: tilelang 2 cases, tilelang_upstream 0 cases" in part.numbers


def test_a_skipped_upstream_uses_ours(tmp_path):
    skipped = {1: (0.8, "skipped"), 2: (0.5, "skipped")}
    part = _claim(tmp_path, skipped).parts[0]
    assert f"geomean {_geomean([1.25, 2.0]):.2f}x vs cublas over 2 cases" in part.numbers
    assert "carried by: tilelang 2 cases, tilelang_upstream 0 cases" in part.numbers
    assert any("tilelang_upstream has no measured rows here (2 skipped)" in d for d in part.details)
    assert "tilelang alone: the same, as it carries every case" in part.numbers
    assert part.verdict == V.SUPPORTED  # 1.58x, ours alone


def test_a_tie_goes_to_our_kernel(tmp_path):
    part = _claim(tmp_path, {1: (0.5, 0.5)}).parts[0]
    assert "carried by: tilelang 1 case, tilelang_upstream 0 cases" in part.numbers


def test_upstream_incorrect_is_excluded_and_caps_only_without_a_correct_tilelang(tmp_path):
    # Ours correct and fast where upstream fails its gate: the verdict stands, the failure is named.
    part = _claim(tmp_path / "a", {1: (0.5, "incorrect"), 2: (0.5, 0.6)}).parts[0]
    assert part.verdict == V.SUPPORTED
    assert any("1 tilelang_upstream cases fail the correctness gate" in d for d in part.details)
    # A case whose only TileLang result is an incorrect upstream one: capped at partly.
    part = _claim(tmp_path / "b", {1: (0.5, 0.5), 2: ("error", "incorrect")}).parts[0]
    assert part.verdict == V.PARTLY
    assert any("have no correct TileLang implementation" in d for d in part.details)


def test_grouped_lines_say_which_groups_upstream_carries(tmp_path):
    part = _claim(tmp_path, group_by=["M"]).parts[0]
    assert "M=1: 2.00x over 1 cases (tilelang_upstream carries 1)" in part.details
    assert "M=2: 2.00x over 1 cases" in part.details


def test_the_table_shows_upstream_beside_ours_and_the_best_of(tmp_path):
    results = load(_tree(tmp_path))
    rows = results.rows("gemm", "h100")
    table = build_table(rows, results.params["gemm"], "tilelang",
                        {"baselines": ["cublas"], "best_of": BEST_OF})
    assert table.header[1:3] == ["tilelang", "tilelang_upstream"]
    assert any(s.startswith(f"tilelang vs cublas: geomean {_geomean(OURS):.2f}x") for s in table.summary)
    assert (f"best of tilelang and tilelang_upstream per case vs cublas: geomean {_geomean(BEST):.2f}x over 4 "
            "cases (carried by: tilelang 2 cases, tilelang_upstream 2 cases)") in table.summary


def test_no_upstream_rows_no_best_of_line(tmp_path):
    results = load(_tree(tmp_path, {1: (0.5, "skipped")}))
    table = build_table(results.rows("gemm", "h100"), results.params["gemm"], "tilelang",
                        {"baselines": ["cublas"], "best_of": BEST_OF})
    assert not any(s.startswith("best of") for s in table.summary)


def test_bars_draw_ours_and_the_example_per_case(tmp_path):
    import matplotlib.pyplot as plt

    from repro.report.figures import experiment_figures
    from repro.report.plots import draw_bars

    results = load(_tree(tmp_path))
    rows = results.rows("gemm", "h100")
    fig = draw_bars(rows, {"y": "median_ms", "label": ["M"]}, ["M"], "t", {})
    ax = fig.axes[0]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:2] == ["tilelang", "tilelang_upstream"]
    # One bar per ok row: ours on M=1,2,3, the example on M=1,2,4, cuBLAS on all four.
    assert len(ax.patches) == 3 + 3 + 4
    plt.close(fig)
    figures = experiment_figures(results, "gemm", {"figures": [{"kind": "bars", "y": "median_ms", "label": ["M"]}]},
                                 tmp_path / "fig")
    assert figures and "two TileLang bars per case" in figures[0].caption


def test_the_claims_judged_on_both_implementations():
    rules = yaml.safe_load((ROOT / "configs" / "claims.yaml").read_text())["claims"]
    for claim in ("C1", "C3", "C4"):
        speed = [p for p in rules[claim]["parts"] if p["kind"] == "speedup"]
        assert speed and all(p.get("best_of") == BEST_OF for p in speed), claim
    gemm = [p for p in rules["C5"]["parts"] if p.get("experiment") == "gemm"]
    assert gemm and not any(p.get("best_of") for p in gemm)
    assert not any(p.get("best_of") for p in rules["C7"]["parts"])


@pytest.mark.parametrize("backend", ["tilelang", "tilelang_upstream"])
def test_figure_colours_tell_the_two_apart(backend):
    from repro.report import style

    assert style.color(backend) in style.BACKEND_COLORS.values()
    assert style.color("tilelang") != style.color("tilelang_upstream")
