"""The report: regenerated from a fixture results tree, byte-stable, and verdicts by the rules."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from repro.report import claims as ledger
from repro.report import verdicts as V
from repro.report.build import generate
from repro.report.load import load

FIXTURE = Path(__file__).parent / "fixtures" / "results"
RUN = "run-a"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def paper(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "paper"
    generate(FIXTURE, out)
    return out


def test_writes_every_output(paper):
    names = set(_files(paper))
    for name in ("README.md", "claims.md", "claims.tex", "environment.md", "environment.tex",
                 "tables/all.tex", "figures/all.tex", "tables/loc.md", "tables/portability.md"):
        assert name in names, name
    for experiment in ("gemm", "flash_attention", "mla_decode"):
        assert {f"tables/{experiment}.md", f"tables/{experiment}.tex"} <= names
        figures = [n for n in names if n.startswith(f"figures/{experiment}-h100")]
        assert any(n.endswith(".png") for n in figures) and any(n.endswith(".pdf") for n in figures)
    assert "figures/loc-h100.png" in names


def test_regeneration_is_byte_identical(paper, tmp_path):
    again = tmp_path / "paper"  # same depth below a temp folder: relative links are the same too
    generate(FIXTURE, again)
    first, second = _files(paper), _files(again)
    assert sorted(first) == sorted(second)
    assert [n for n in first if first[n] != second[n]] == []


def test_dates_come_from_manifests_not_the_clock(paper):
    readme = (paper / "README.md").read_text()
    assert "runs of 2026-11-25" in readme
    assert "NVIDIA H100 80GB HBM3" in (paper / "tables" / "gemm.md").read_text()


def test_every_claim_has_a_verdict(paper):
    text = (paper / "claims.md").read_text()
    for claim in ("C1", "C2", "C3", "C4", "C5", "C6"):
        assert f"## {claim}" in text
    assert text.count("**Verdict: ") == 6


def test_fixture_verdicts():
    rules = __import__("yaml").safe_load((Path(__file__).parents[1] / "configs" / "claims.yaml").read_text())
    verdicts = {c.id: c for c in ledger.evaluate(rules, load(FIXTURE))}
    assert verdicts["C2"].verdict == V.NOT_MEASURED  # no Ascend results, vendor source not public
    assert verdicts["C4"].verdict == V.NOT_MEASURED  # no DSA results in the fixture
    assert verdicts["C5"].verdict == V.PARTLY  # H100 measured, MI300X missing
    mi300x = next(p for p in verdicts["C5"].parts if "MI300X" in p.name)
    assert mi300x.verdict == V.NOT_MEASURED and "mi300x" in mi300x.details[0]


# Hand-made results: one GEMM case grid on h100 with chosen speedups.

def _write_results(root: Path, rows: list[dict], hardware: str = "h100") -> Path:
    folder = root / "results" / hardware
    folder.mkdir(parents=True, exist_ok=True)
    fields = ["experiment", "case", "backend", "status", "median_ms", "tflops", "run_id", "M", "dtype"]
    with open(folder / "gemm.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    (folder / f"env-{RUN}.json").write_text(json.dumps({"run_id": RUN, "timestamp": "2026-01-02T03:04:05"}))
    return root / "results"


def _row(m: int, dtype: str, backend: str, ms: float, status: str = "ok") -> dict:
    return {"experiment": "gemm", "case": f"M={m},dtype={dtype}", "backend": backend, "status": status,
            "median_ms": ms, "tflops": 2.0 / ms, "run_id": RUN, "M": m, "dtype": dtype}


def _grid(speedup_bf16: float, speedup_fp16: float, base_status: str = "ok") -> list[dict]:
    rows = []
    for m in (1024, 4096):
        for dtype, speedup in (("bf16", speedup_bf16), ("fp16", speedup_fp16)):
            rows.append(_row(m, dtype, "cublas", 1.0, base_status))
            rows.append(_row(m, dtype, "tilelang", 1.0 / speedup))
    return rows


def _rule(**overrides) -> dict:
    part = {"name": "gemm speed", "kind": "speedup", "experiment": "gemm", "hardware": ["h100"],
            "backend": "tilelang", "baseline": ["cublas"], "statistic": "geomean", "supported": 1.1,
            "partly": 0.9}
    part.update(overrides)
    return {"claims": {"X1": {"statement": "TileLang beats cuBLAS", "parts": [part]}}}


def _verdict(root: Path, rows: list[dict], **overrides) -> ledger.ClaimResult:
    return ledger.evaluate(_rule(**overrides), load(_write_results(root, rows)))[0]


def test_claim_that_holds(tmp_path):
    claim = _verdict(tmp_path, _grid(1.3, 1.2))
    assert claim.verdict == V.SUPPORTED
    assert "geomean 1.25x vs cublas over 4 cases" in claim.parts[0].numbers
    assert "results/h100/gemm.csv" in claim.parts[0].evidence
    assert f"results/h100/env-{RUN}.json" in claim.parts[0].evidence


def test_claim_that_fails(tmp_path):
    assert _verdict(tmp_path, _grid(0.7, 0.6)).verdict == V.NOT_SUPPORTED


def test_claim_between_thresholds_is_partly_supported(tmp_path):
    assert _verdict(tmp_path, _grid(1.0, 1.0)).verdict == V.PARTLY


def test_grouped_claim_says_where_it_holds(tmp_path):
    claim = _verdict(tmp_path, _grid(1.5, 0.8), group_by=["dtype"])
    assert claim.verdict == V.PARTLY
    assert "holds for dtype=bf16" in claim.parts[0].details
    assert claim.parts[0].details[0].startswith("rule: geomean of time(cublas) / time(tilelang) over all cases")


def test_missing_hardware_is_not_measured(tmp_path):
    claim = _verdict(tmp_path, _grid(1.3, 1.3), hardware=["mi300x"])
    assert claim.verdict == V.NOT_MEASURED
    assert claim.parts[0].details == ["no gemm results on mi300x"]


def test_reported_rows_alone_never_decide(tmp_path):
    claim = _verdict(tmp_path, _grid(1.3, 1.3, base_status="reported"))
    assert claim.verdict == V.NOT_MEASURED
    assert "4 reported" in claim.parts[0].details[0]


def test_incorrect_kernels_cap_the_verdict(tmp_path):
    rows = _grid(1.3, 1.3) + [_row(8192, "bf16", "tilelang", 0.5, "incorrect"), _row(8192, "bf16", "cublas", 1.0)]
    claim = _verdict(tmp_path, rows)
    assert claim.verdict == V.PARTLY
    assert any("fail the correctness gate" in d for d in claim.parts[0].details)


def test_baseline_fallback_names_the_one_used(tmp_path):
    claim = _verdict(tmp_path, _grid(1.3, 1.3), baseline=["hipblaslt", "cublas"])
    assert claim.verdict == V.SUPPORTED and "vs cublas" in claim.parts[0].numbers
    assert any(d.startswith("baseline hipblaslt has no measured rows here") for d in claim.parts[0].details)


def test_context_parts_never_decide(tmp_path):
    rules = _rule()
    rules["claims"]["X1"]["parts"].append({**rules["claims"]["X1"]["parts"][0], "name": "ctx", "decides": False,
                                           "supported": 9.0, "partly": 8.0})
    claim = ledger.evaluate(rules, load(_write_results(tmp_path, _grid(1.3, 1.3))))[0]
    assert [p.verdict for p in claim.parts] == [V.SUPPORTED, V.NOT_SUPPORTED]
    assert claim.verdict == V.SUPPORTED and "ctx: not supported (context)" in claim.where


def test_missing_cases_are_grouped():
    from repro.report.coverage import describe

    planned = [{"dtype": d, "d": h, "s": s, "b": 4096 // s} for d in ("fp16", "bf16") for h in (64, 256)
               for s in (512, 1024, 2048)]
    missing = [c for c in planned if c["dtype"] == "bf16" or (c["d"] == 256 and c["s"] > 512)]
    assert describe(planned, missing, ["dtype", "d"], ["s"]) == [
        "dtype=bf16: all planned (6 cases)", "dtype=fp16, d=256: s ∈ {1k, 2k} (2 cases)"]


@pytest.mark.parametrize("verdicts, expected", [
    ([V.SUPPORTED, V.SUPPORTED], V.SUPPORTED),
    ([V.SUPPORTED, V.NOT_MEASURED], V.PARTLY),
    ([V.NOT_SUPPORTED, V.NOT_MEASURED], V.NOT_SUPPORTED),
    ([V.NOT_MEASURED, V.NOT_MEASURED], V.NOT_MEASURED),
    ([V.SUPPORTED, V.NOT_SUPPORTED], V.PARTLY),
])
def test_combining_parts(verdicts, expected):
    assert V.combine(verdicts) == expected


def test_loc_budget_and_missing_loc(tmp_path):
    rules = {"claims": {"X2": {"statement": "small", "parts": [
        {"name": "lines", "kind": "loc_budget", "select": {"implementation": "(?i)tilelang"}, "budget": 100}]}}}
    root = _write_results(tmp_path, _grid(1.0, 1.0))
    assert ledger.evaluate(rules, load(root))[0].verdict == V.NOT_MEASURED
    (root / "loc.csv").write_text("implementation,operator,code_lines,status\nTileLang fa,flash_attention,120,ok\n")
    assert ledger.evaluate(rules, load(root))[0].verdict == V.NOT_SUPPORTED


def test_empty_results_tree_gives_a_not_measured_report(tmp_path):
    (tmp_path / "results").mkdir()
    generate(tmp_path / "results", tmp_path / "paper")
    text = (tmp_path / "paper" / "claims.md").read_text()
    assert text.count("**Verdict: not measured.**") == 6
    assert (tmp_path / "paper" / "figures" / "all.tex").exists()


def test_line_counts_alone_never_carry_a_speed_claim(tmp_path):
    root = _write_results(tmp_path, _grid(1.3, 1.3))
    (root / "loc.csv").write_text("implementation,operator,code_lines,status\nTileLang fa,flash_attention,60,ok\n")
    rules = _rule(hardware=["mi300x"])
    rules["claims"]["X1"]["parts"].append(
        {"name": "lines", "kind": "loc_budget", "select": {"implementation": "(?i)tilelang"}, "budget": 100})
    claim = ledger.evaluate(rules, load(root))[0]
    assert [p.verdict for p in claim.parts] == [V.NOT_MEASURED, V.SUPPORTED]
    assert claim.verdict == V.NOT_MEASURED


def test_figures_only_writes_no_tables(tmp_path):
    from repro.report.__main__ import main

    assert main(["--results", str(FIXTURE), "--out", str(tmp_path / "paper"), "--figures-only"]) == 0
    written = _files(tmp_path / "paper")
    assert "figures/gemm-h100.png" in written and "figures/all.tex" in written
    assert not any(name.startswith("tables/") or name == "claims.md" for name in written)


# The committed paper/ must be what the committed results/ give: CI catches a stale paper.

ROOT = Path(__file__).resolve().parents[1]


def test_committed_paper_is_current(tmp_path):
    import shutil

    import matplotlib

    if not (ROOT / "results").is_dir():
        pytest.skip("no committed results/")
    shutil.copytree(ROOT / "results", tmp_path / "results")  # same layout: relative links match
    written = generate(tmp_path / "results", tmp_path / "paper")
    fresh = {p.relative_to(tmp_path / "paper").as_posix() for p in written}
    committed = {p.relative_to(ROOT / "paper").as_posix() for folder in ("figures", "tables")
                 for p in (ROOT / "paper" / folder).glob("*") if p.suffix in (".md", ".tex", ".png", ".pdf")}
    assert sorted(committed - fresh) == [], "stale generated files in paper/: run `make paper`"
    # Figures are compared byte for byte with the pinned matplotlib only (its rasteriser and PDF writer).
    binary = matplotlib.__version__ == "3.11.2"
    stale = [name for name in sorted(fresh)
             if (binary or not name.endswith((".png", ".pdf")))
             and (not (ROOT / "paper" / name).exists()
                  or (ROOT / "paper" / name).read_bytes() != (tmp_path / "paper" / name).read_bytes())]
    assert stale == [], f"paper/ is out of date for {stale[:5]}: run `make paper` and commit paper/"
