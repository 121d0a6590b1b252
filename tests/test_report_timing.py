"""The environment appendix's `Time per run` table: read from the runs' manifests (sweeps and quick
runs), nothing for manifests that carry no timing."""
from pathlib import Path

from repro.report.environment import TIMING_HEADER, timing_rows, write_environment
from repro.report.load import Results


def _results(tmp_path) -> Results:
    manifests = {
        ("h200", "r1"): {"timestamp": "2026-12-03T13:02:12+00:00", "_path": "results/h200/env-r1.json",
                         "sweep": {"experiment": "mla_decode", "cases": 80, "wall_s": 229.3, "search_s": 53.8,
                                   "isolated_s": 171.3}},
        ("h200", "r2"): {"timestamp": "2026-12-03T12:57:46+00:00", "_path": "results/h200/env-r2.json",
                         "quick": {"cases": 7, "wall_s": 150.0, "kernels": {"sparse_mla": {"cases": 2, "isolated_s": 37.7},
                                                                          "flash_attention": {"cases": 3, "isolated_s": 38.1}}}},
        ("h100", "old"): {"timestamp": "2026-11-25T21:36:17+00:00", "_path": "results/h100/env-old.json"},
    }
    return Results(root=tmp_path / "results", manifests=manifests)


def test_rows_come_from_sweep_and_quick_manifests(tmp_path):
    rows = timing_rows(_results(tmp_path))
    assert rows == [
        ["h200", "r1", "sweep: mla_decode", "80", "229", "54", "171", "2026-12-03"],
        ["h200", "r2", "quick: flash_attention, sparse_mla", "7", "150", "", "76", "2026-12-03"],
    ]
    assert all(len(r) == len(TIMING_HEADER) for r in rows)


def test_appendix_has_the_table_only_when_some_run_was_timed(tmp_path):
    out = tmp_path / "paper"
    out.mkdir()
    results = _results(tmp_path)
    write_environment(results, out)
    text = (out / "environment.md").read_text()
    assert "## Time per run" in text and "| h200 | r1 | sweep: mla_decode | 80 | 229 | 54 | 171 | 2026-12-03 |" in text
    assert "tab:run-times" in (out / "environment.tex").read_text()
    results.manifests = {k: v for k, v in results.manifests.items() if k[1] == "old"}
    write_environment(results, out)
    assert "Time per run" not in (out / "environment.md").read_text()
