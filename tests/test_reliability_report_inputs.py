"""The report refuses results it cannot stand behind, before it writes anything.

Each test here failed on the report as it was: an empty tree wiped the paper, the CPU self-test
counted as a card, impossible figures (-1, 0, nan, inf) and damaged names reached the tables,
and any JSON object passed for a manifest.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from repro.report import build
from repro.report.__main__ import main
from repro.report.load import load
from repro.results.store import StoreError
from tests.helpers import tree_files

RUN = "run-a"


def _checks():
    """The report's own checks (imported here: the tests of behaviour run on any version)."""
    from repro.report import checks

    return checks
FIELDS = ["experiment", "case", "backend", "status", "median_ms", "tflops", "gbps", "rel_l2", "run_id", "M",
          "dtype"]


def _row(m: int, dtype: str, backend: str, ms: float, status: str = "ok", **figures) -> dict:
    row = {"experiment": "gemm", "case": f"M={m},dtype={dtype}", "backend": backend, "status": status,
           "median_ms": ms, "tflops": 2.0 / ms, "gbps": 3.0 / ms, "rel_l2": 1e-3, "run_id": RUN, "M": m,
           "dtype": dtype}
    return {**row, **figures}


def _grid() -> list[dict]:
    return [_row(m, dtype, backend, ms) for m in (1024, 4096) for dtype in ("bf16", "fp16")
            for backend, ms in (("cublas", 1.0), ("tilelang", 0.8))]


def _write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _manifest(folder: Path, run: str = RUN, **fields) -> Path:
    data = {"run_id": run, "timestamp": "2026-01-02T03:04:05+00:00", "gpu": {"name": "NVIDIA H100", "count": 1},
            "cuda": "12.8", "torch": "2.11.0", "git_dirty": False, **fields}
    path = folder / f"env-{run}.json"
    path.write_text(json.dumps(data))
    return path


def _results(root: Path, rows: list[dict] | None = None, hardware: str = "h100") -> Path:
    folder = root / "results" / hardware
    _write_csv(folder / "gemm.csv", _grid() if rows is None else rows, FIELDS)
    _manifest(folder)
    return root / "results"


def _old_paper(root: Path) -> tuple[Path, dict[str, bytes]]:
    out = root / "paper"
    (out / "tables").mkdir(parents=True)
    (out / "README.md").write_text("the paper as it was\n")
    (out / "tables" / "gemm.md").write_text("| old |\n")
    return out, tree_files(out)


@pytest.fixture
def quick(monkeypatch):
    """No drawing: the checks under test run before any figure."""
    monkeypatch.setattr(build, "make_figures", lambda *args: [])


def _refused(capsys, root: Path, results: Path, says: str) -> str:
    """The report exits 4 with one `error:` line saying `says`; paper/ and its folder as they were."""
    out, before = _old_paper(root)
    names = sorted(p.name for p in root.iterdir())
    code = main(["--results", str(results), "--out", str(out)])
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line]
    assert code == 4, captured
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    assert "paper was left as it was" in err[0]
    assert tree_files(out) == before
    assert sorted(p.name for p in root.iterdir()) == names  # no build folder left behind
    return err[0]


# 1. Nothing measured is an error, not a report of "not measured" everywhere.

def test_an_empty_results_tree_is_refused_and_the_paper_kept(tmp_path, capsys, quick):
    (tmp_path / "results").mkdir()
    _refused(capsys, tmp_path, tmp_path / "results", "no measured results")


def test_a_tree_without_an_ok_row_is_refused(tmp_path, capsys, quick):
    rows = [_row(1024, "bf16", "tilelang", 1.0, "error"), _row(1024, "bf16", "cublas_paper", 1.0, "reported")]
    results = _results(tmp_path, rows)
    (results / "loc.csv").write_text("implementation,operator,code_lines,status\nTileLang gemm,gemm,90,ok\n")
    _refused(capsys, tmp_path, results, "no card folder holds an ok row")


def test_only_self_test_rows_count_as_nothing_measured(tmp_path, capsys, quick):
    results = tmp_path / "results"
    _write_csv(results / "cpu" / "selftest.csv", [
        {"experiment": "selftest", "case": "dtype=fp32,n=16", "backend": "matmul", "status": "ok",
         "median_ms": 0.01, "tflops": 0.5, "run_id": RUN, "hardware": "cpu"}])
    line = _refused(capsys, tmp_path, results, "no measured results")
    assert "self-test" in line


# 2. The CPU self-test is no card.

def _with_selftest(root: Path, folder: str = "cpu") -> Path:
    results = _results(root)
    _write_csv(results / folder / "selftest.csv", [
        {"experiment": "selftest", "case": f"dtype=fp32,n={n}", "backend": "matmul", "status": "ok",
         "median_ms": 0.001, "tflops": 5000.0, "run_id": "st-1", "hardware": "cpu"} for n in (16, 24)])
    _write_csv(results / folder / "gemm.csv", [  # a self-test row filed as gemm: still no card's
        {**_row(1024, "bf16", "tilelang", 0.001), "tflops": 9999.0, "run_id": "st-1", "hardware": "cpu"}])
    _manifest(results / folder, "st-1")
    (results / "loc.csv").write_text("implementation,operator,code_lines,status\nTileLang gemm,gemm,90,ok\n")
    return results


def test_self_test_results_are_left_out_with_a_note(tmp_path):
    results = load(_with_selftest(tmp_path))
    assert results.hardware == ["h100"]
    assert set(results.rows("gemm")["hardware"]) == {"h100"} and "selftest" not in results.experiments
    assert len(results.notes) == 1 and "results/cpu" in results.notes[0] and "self-test" in results.notes[0]


def test_self_test_results_change_neither_hardware_nor_the_loc_table(tmp_path, capsys, quick):
    results = _with_selftest(tmp_path)
    out = tmp_path / "paper"
    assert main(["--results", str(results), "--out", str(out)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 1 and err[0].startswith("note: left out results/cpu")
    loc = (out / "tables" / "loc.md").read_text()
    assert "best measured TFLOPS on h100" in loc
    row = next(line for line in loc.splitlines() if "TileLang gemm" in line)
    assert row.split("|")[-2].strip() == "2", row  # tilelang's best on the h100 (2 / 0.8 ms), not the cpu's 9999
    readme = (out / "README.md").read_text()
    hardware = readme.split("## Notes on the results tree")[0]
    assert "- cpu" not in hardware and "cpu (" not in hardware
    assert "left out results/cpu" in readme


def test_self_test_rows_in_a_card_folder_of_their_own_are_left_out(tmp_path):
    results = load(_with_selftest(tmp_path, folder="laptop"))
    assert results.hardware == ["h100"] and "results/laptop" in results.notes[0]


def test_a_file_mixing_self_test_and_measured_rows_is_refused(tmp_path, capsys, quick):
    rows = _grid() + [{**_row(8192, "bf16", "tilelang", 0.5), "experiment": "selftest"}]
    _refused(capsys, tmp_path, _results(tmp_path, rows),
             "is a self-test row (experiment selftest or hardware cpu) among measured ones")


# 3. Figures that cannot be true. (The store's reader may refuse them first: either way, exit 4 and
# one line naming the file, the row and the figure; the report's own check is tested on its own.)

IMPOSSIBLE = [
    ("tflops", "-1", "tflops=-1 is not above zero"),
    ("tflops", "0", "tflops=0 is not above zero"),
    ("tflops", "nan", "tflops=nan is not a finite number"),
    ("tflops", "inf", "tflops=inf is not a finite number"),
    ("tflops", "-inf", "tflops=-inf is not a finite number"),
    ("gbps", "0", "gbps=0 is not above zero"),
    ("gbps", "Infinity", "gbps=Infinity is not a finite number"),
    ("median_ms", "nan", "median_ms=nan is not a finite number"),  # read as an empty cell once
    ("rel_l2", "-0.5", "rel_l2=-0.5 is negative"),
]


@pytest.mark.parametrize("column, value, says", IMPOSSIBLE)
def test_impossible_figures_are_refused_naming_file_and_row(tmp_path, capsys, quick, column, value, says):
    rows = _grid()
    rows[5] = {**rows[5], column: value}
    line = _refused(capsys, tmp_path, _results(tmp_path, rows), column)
    assert "results/h100/gemm.csv: row 6 (" in line and "tilelang" in line


@pytest.mark.parametrize("column, value, says", IMPOSSIBLE)
def test_the_reports_own_check_of_figures(tmp_path, column, value, says):
    rows = _grid()
    rows[5] = {**rows[5], column: value}
    path = _results(tmp_path, rows) / "h100" / "gemm.csv"
    with pytest.raises(StoreError) as caught:
        _checks().check_figures(path)
    assert f"gemm.csv: row 6 ('M=4096,dtype=bf16', 'tilelang'): {says}" in str(caught.value)
    _checks().check_figures(_results(tmp_path / "good") / "h100" / "gemm.csv")  # the same file, unharmed


def test_impossible_published_figures_are_refused(tmp_path, capsys, quick):
    rows = _grid() + [{**_row(1024, "bf16", "cublas_paper", 1.0, "reported"), "tflops": "inf"}]
    _refused(capsys, tmp_path, _results(tmp_path, rows), "tflops=inf is not a finite number")


def test_figures_of_rows_that_did_not_run_are_not_checked_and_uncounted_flops_may_be_zero(tmp_path):
    rows = _grid() + [_row(8192, "bf16", "tilelang", 1.0, "incorrect", tflops="")]
    folder = _results(tmp_path, rows) / "h100"
    _write_csv(folder / "membw.csv", [  # a copy counts no FLOPs: zero in every row
        {"experiment": "membw", "case": f"bytes={n}", "backend": "copy", "status": "ok", "median_ms": 1.0,
         "tflops": 0.0, "gbps": 3000.0, "run_id": RUN} for n in (1, 2)])
    results = load(folder.parent)
    assert len(results.rows("membw")) == 2 and len(results.rows("gemm")) == 9


def test_inf_no_longer_reaches_the_figures(tmp_path, capsys):
    rows = _grid()
    rows[1] = {**rows[1], "tflops": "inf"}
    _refused(capsys, tmp_path, _results(tmp_path, rows), "tflops")  # drawing included: no matplotlib crash


# 4. Damaged names (the store's reader may refuse them first; the report's check is tested on its own).

DAMAGED = [
    ("backend", "tilelang\x07", "backend 'tilelang\\x07' is not a backend name"),
    ("backend", "tile\nlang", "backend 'tile\\nlang' is not a backend name"),
    ("backend", "tile lang", "backend 'tile lang' is not a backend name"),
    ("case", "M=4096,dtype=bf16\x1b", "a control or non-printable character"),
    ("case", "M=4096,dtype=bf\u200b16", "a control or non-printable character"),
    ("case", "M=4096,,dtype=bf16", "'' is not key=value"),
    ("case", "M=4096,dtype", "'dtype' is not key=value"),
    ("case", "M=4096,dtype=bf16,M=1", "a parameter named twice"),
    ("run_id", "run\x00a", "is not a run id"),
]


@pytest.mark.parametrize("column, value, says", DAMAGED)
def test_damaged_names_are_refused(tmp_path, capsys, quick, column, value, says):
    rows = _grid()
    rows[5] = {**rows[5], column: value}
    line = _refused(capsys, tmp_path, _results(tmp_path, rows), column)
    assert "results/h100/gemm.csv: row 6" in line


@pytest.mark.parametrize("column, value, says", DAMAGED)
def test_the_reports_own_check_of_names(tmp_path, column, value, says):
    rows = _grid()
    rows[5] = {**rows[5], column: value}
    with pytest.raises(StoreError) as caught:
        _checks().check_names(Path("results/h100/gemm.csv"), __import__("pandas").DataFrame(rows))
    assert "results/h100/gemm.csv: row 6 (" in str(caught.value) and says in str(caught.value)
    assert "\n" not in str(caught.value)
    _checks().check_names(Path("gemm.csv"), __import__("pandas").DataFrame(_grid()))


def test_case_strings_as_the_experiments_write_them_pass():
    for case in ("M=1024,N=1024,K=1024,dtype=bf16", "grid=flashmla,batch=128,lengths=equal,dtype=fp8_block",
                 "causal=False,head_dim=64,scale=0.5"):
        assert _checks().case_problem(case) is None, case


def test_a_damaged_card_folder_name_is_refused(tmp_path, capsys, quick):
    results = _results(tmp_path)
    _results(tmp_path, hardware="h100\x1b")
    line = _refused(capsys, tmp_path, results, "is not a card or experiment name")
    assert "\\x1b" in line


def test_a_damaged_name_no_longer_changes_a_claim(tmp_path):
    """The issue's case: a control character split tilelang into two columns and a claim's cases."""
    rows = _grid()
    rows[1] = {**rows[1], "backend": "tilelang\x01"}
    with pytest.raises(StoreError, match="backend"):
        load(_results(tmp_path, rows))


# 5. Manifests as the runner writes them. (The store's manifest reader may refuse them first:
# either way, exit 4 and one line naming the file; the report's own check is tested on its own.)

BAD_MANIFESTS = [
    ({"junk": {f"k{i}": "x" * 100 for i in range(2000)}}, "unknown field 'junk'"),  # and 220 kB
    ({"junk": {"a": 1}}, "unknown field 'junk'"),
    ({"gpu": {"name": "H100", "memory_gib": float("nan")}}, "manifest.gpu.memory_gib=nan: not a finite number"),
    ({"sweep": {"wall_s": float("inf")}}, "manifest.sweep.wall_s=inf: not a finite number"),
    ({"git_dirty": "yes"}, "`git_dirty` must be true/false or null"),
    ({"cudnn": [91900]}, "`cudnn` must be number or text or null"),
    ({"cuda": True}, "`cuda` must be text or null"),
    ({"timestamp": "yesterday"}, "is not an ISO 8601 date"),
    ({"torch": "2.11\n<script>"}, "manifest.torch: text longer than"),
    ({"gpu_state": ["driver 580"]}, "`gpu_state` must be a list of objects"),
    ({"gpu": {"name": {"a": {"b": {"c": {"d": {"e": 1}}}}}}}, "nested deeper than"),
]


@pytest.mark.parametrize("fields, says", BAD_MANIFESTS)
def test_a_manifest_the_runner_would_not_write_is_refused(tmp_path, capsys, quick, fields, says):
    results = _results(tmp_path)
    _manifest(results / "h100", **fields)
    line = _refused(capsys, tmp_path, results, f"results/h100/env-{RUN}.json")
    assert len(line) < 1200  # the junk is never copied into the message


@pytest.mark.parametrize("fields, says", BAD_MANIFESTS)
def test_the_reports_own_check_of_manifests(fields, says):
    good = {"run_id": RUN, "timestamp": "2026-01-02T03:04:05+00:00", "gpu": {"name": "NVIDIA H100"}}
    assert _checks().manifest_problem(good) is None
    assert says in _checks().manifest_problem({**good, **fields})


def test_an_oversized_manifest_is_refused_unread(tmp_path):
    path = _manifest(tmp_path, baselines={f"b{i}": "x" * 4000 for i in range(100)})
    with pytest.raises(StoreError, match="a run manifest of 4"):
        _checks().read_manifest(path)


def test_a_manifest_without_a_timestamp_is_refused(tmp_path, capsys, quick):
    results = _results(tmp_path)
    (results / "h100" / f"env-{RUN}.json").write_text(json.dumps({"run_id": RUN, "cuda": "12.8"}))
    _refused(capsys, tmp_path, results, "no `timestamp`")


def test_manifests_as_written_pass(tmp_path):
    root = Path(__file__).resolve().parents[1]
    fixture = load(root / "tests" / "fixtures" / "results")
    assert fixture.manifests
    if (root / "results").is_dir():
        assert len(load(root / "results").manifests) >= 2
    results = _results(tmp_path)
    _manifest(results / "h100", baselines={"fa3": "2.8.3 abc; built"},
              gpu_state=[{"driver": "580", "clock_sm_mhz": "1980"}], sweep={"experiment": "gemm", "wall_s": 12.5, "rows": 8}, cudnn=91900, hip=None, git_commit=None)
    assert list(load(results).manifests) == [("h100", RUN)]
