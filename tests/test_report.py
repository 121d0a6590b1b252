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
from tests.helpers import tree_files

FIXTURE = Path(__file__).parent / "fixtures" / "results"
RUN = "run-a"


@pytest.fixture(scope="module")
def paper(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "paper"
    generate(FIXTURE, out)
    return out


def test_writes_every_output(paper):
    names = set(tree_files(paper))
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
    first, second = tree_files(paper), tree_files(again)
    assert sorted(first) == sorted(second)
    assert [n for n in first if first[n] != second[n]] == []


def test_dates_come_from_manifests_not_the_clock(paper):
    readme = (paper / "README.md").read_text()
    assert "runs of 2026-11-25" in readme
    assert "NVIDIA H100 80GB HBM3" in (paper / "tables" / "gemm.md").read_text()


def test_every_claim_has_a_verdict(paper):
    text = (paper / "claims.md").read_text()
    for claim in ("C1", "C2", "C3", "C4", "C5", "C6", "C7"):
        assert f"## {claim}" in text
    assert text.count("**Verdict: ") == 7


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
    base = "cublas_paper" if base_status == "reported" else "cublas"  # published rows have names of their own
    for m in (1024, 4096):
        for dtype, speedup in (("bf16", speedup_bf16), ("fp16", speedup_fp16)):
            rows.append(_row(m, dtype, base, 1.0, base_status))
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
    # Even a rule that names the published backend as its baseline gets no verdict from it.
    claim = _verdict(tmp_path, _grid(1.3, 1.3, base_status="reported"), baseline=["cublas_paper"])
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


def test_empty_results_tree_is_refused_not_reported_as_not_measured(tmp_path):
    from repro.results.store import StoreError

    (tmp_path / "results").mkdir()
    with pytest.raises(StoreError, match="no measured results"):  # it would turn every verdict to "not measured"
        generate(tmp_path / "results", tmp_path / "paper")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


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
    written = tree_files(tmp_path / "paper")
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


# `make paper` never regenerates paper/ from results it could not read.

def _old_paper(root: Path) -> tuple[Path, dict[str, bytes]]:
    out = root / "paper"
    (out / "tables").mkdir(parents=True)
    (out / "README.md").write_text("the paper as it was\n")
    (out / "tables" / "gemm.md").write_text("| old |\n")
    (out / "figures").mkdir()
    (out / "figures" / "gemm-h100.png").write_bytes(b"an old figure")
    return out, tree_files(out)


def _report(capsys, results: Path, out: Path, *extra: str) -> tuple[int, list[str]]:
    from repro.report.__main__ import main

    code = main(["--results", str(results), "--out", str(out), *extra])
    return code, [line for line in capsys.readouterr().err.splitlines() if line]


def _cut(results: Path) -> None:
    path = results / "h100" / "gemm.csv"
    path.write_bytes(path.read_bytes()[:-9])  # the last line loses its end


def _non_numeric(results: Path) -> None:
    path = results / "h100" / "gemm.csv"
    path.write_text(path.read_text().replace(",0.5,", ",half,", 1))


def _not_json(results: Path) -> None:
    (results / "h100" / f"env-{RUN}.json").write_text('{"run_id": "run-a", ')


def _json_list(results: Path) -> None:
    (results / "h100" / f"env-{RUN}.json").write_text('[{"run_id": "run-a"}]')


def _no_folder(results: Path) -> None:
    import shutil

    shutil.rmtree(results)


@pytest.mark.parametrize("damage, says", [
    (_no_folder, "no results folder"),
    (_cut, "truncated"),
    (_non_numeric, "median_ms='half' is not a number"),
    (_not_json, "unreadable run manifest"),
    (_json_list, "must be a JSON object"),
])
def test_unreadable_results_leave_the_paper_as_it_was(tmp_path, capsys, damage, says):
    results = _write_results(tmp_path, _grid(2.0, 1.0))
    assert ",0.5," in (results / "h100" / "gemm.csv").read_text()
    damage(results)
    out, before = _old_paper(tmp_path)
    code, err = _report(capsys, results, out)
    assert code == 4
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0]
    assert tree_files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["paper", *(["results"] if results.exists() else [])])


def test_out_naming_a_file_is_one_error_line(tmp_path, capsys):
    results = _write_results(tmp_path, _grid(1.3, 1.3))
    target = tmp_path / "paper.txt"
    target.write_text("not a folder\n")
    code, err = _report(capsys, results, target)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --out") and "file" in err[0]
    assert target.read_text() == "not a folder\n"


def test_a_build_that_fails_midway_leaves_the_paper_as_it_was(tmp_path, monkeypatch):
    from repro.report import build

    def boom(*args, **kwargs):
        raise RuntimeError("figure index failed")

    results = _write_results(tmp_path, _grid(1.3, 1.3))
    out, before = _old_paper(tmp_path)
    monkeypatch.setattr(build, "make_figures", lambda *args: [])  # quick: no drawing
    monkeypatch.setattr(build, "figures_index", boom)
    with pytest.raises(RuntimeError):
        generate(results, out, figures_only=True)
    assert tree_files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["paper", "results"]  # no half-built folder left


def test_a_good_build_replaces_generated_files_and_keeps_the_rest(tmp_path, monkeypatch):
    from repro.report import build

    results = _write_results(tmp_path, _grid(1.3, 1.3))
    out, _ = _old_paper(tmp_path)
    (out / "main.tex").write_text("hand-written\n")
    (out / "figures" / "gone.png").write_bytes(b"a figure of results that vanished")
    mode = out.stat().st_mode & 0o777
    monkeypatch.setattr(build, "make_figures", lambda *args: [])  # quick: no drawing
    written = generate(results, out, figures_only=True)
    assert written == [out / "figures" / "all.tex"] and written[0].is_file()
    assert (out / "main.tex").read_text() == "hand-written\n" and not (out / "figures" / "gone.png").exists()
    assert out.stat().st_mode & 0o777 == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["paper", "results"]


def test_the_report_reads_the_store_columns(tmp_path):
    frame = load(FIXTURE).rows("flash_attention")
    assert "roofline_frac" in frame and "peak_fraction" not in frame
    assert frame["roofline_frac"].notna().any()


def test_published_rows_are_all_in_the_committed_results():
    if not (ROOT / "results").is_dir():
        pytest.skip("no committed results/")
    rows = load(ROOT / "results").rows("flash_attention", "h100")
    published = rows[rows["status"] == "reported"]
    counts = published.groupby("backend").size().to_dict()
    assert counts == {"cudnn_paper": 36, "fa2_paper": 36, "fa3_paper": 35, "triton_paper": 24}
    assert set(published["run_id"]) == {"h100-20261125"}
    mla = load(ROOT / "results").rows("mla_decode", "h100")
    assert len(mla[(mla["status"] == "reported") & (mla["backend"] == "flash_mla_paper")]) == 3


# Verdicts, cards and figures (issue 12): each test fails on the code before the fix.

def test_groups_that_hold_never_lift_a_failing_verdict(tmp_path):
    claim = _verdict(tmp_path, _grid(1.5, 0.3), group_by=["dtype"])  # geomean 0.67x < partly 0.9x
    assert claim.verdict == V.NOT_SUPPORTED
    assert any(d.startswith("holds for dtype=bf16") and "not supported" in d for d in claim.parts[0].details)


def test_a_group_short_of_the_threshold_lowers_a_supported_verdict(tmp_path):
    assert _verdict(tmp_path, _grid(1.6, 1.05), group_by=["dtype"]).verdict == V.PARTLY


def test_committed_c3_reads_by_its_own_thresholds():
    rules = __import__("yaml").safe_load((ROOT / "configs" / "claims.yaml").read_text())
    part = next(p for p in rules["claims"]["C3"]["parts"] if p["kind"] == "speedup")
    only = {"claims": {"C3": rules["claims"]["C3"]}}
    checked = 0
    for claim in ledger.evaluate(only, load(FIXTURE)) + ledger.evaluate(only, load(ROOT / "results")):
        result = claim.parts[0]
        values = [float(n.split("geomean ")[1].split("x")[0]) for n in result.numbers.split("; ") if "geomean " in n]
        # Each card by the thresholds (e.g. the committed H100 run's 0.83x: below 0.85x, not
        # supported), the cards together by the ledger's rule (one card partly: partly).
        if values and all(v < part["supported"] for v in values):
            cards = [V.NOT_SUPPORTED if v < part["partly"] else V.PARTLY for v in values]
            assert result.verdict == V.combine(cards), (values, result.verdict)
            checked += 1
    assert checked


def test_a_stand_in_baseline_never_supports_on_its_own(tmp_path):
    claim = _verdict(tmp_path, _grid(1.3, 1.3), baseline=["fa2", "cublas"], stand_in=["cublas"])
    part = claim.parts[0]
    assert part.verdict == V.PARTLY and claim.verdict == V.PARTLY
    assert "vs cublas (a stand-in)" in part.numbers
    assert any("stand-in for fa2" in d and "capped" in d for d in part.details)
    rules = __import__("yaml").safe_load((ROOT / "configs" / "claims.yaml").read_text())
    c1 = next(p for p in rules["claims"]["C1"]["parts"] if p["kind"] == "speedup")
    assert c1["stand_in"] == ["sdpa_flash"] and c1["baseline"][0] == "fa2"


def test_rows_of_several_cards_sit_side_by_side_and_say_which_card(tmp_path):
    _write_results(tmp_path, _grid(1.3, 1.3), "h100")
    root = _write_results(tmp_path, _grid(1.5, 1.5), "h200")
    rules = _rule(hardware=["h100", "h200"], memory_bound=True)
    rules["claims"]["X1"]["cards_named"] = ["h100"]
    part = ledger.evaluate(rules, load(root))[0].parts[0]
    assert "h100: geomean 1.30x" in part.numbers and "h200: geomean 1.50x" in part.numbers
    assert sum(d.startswith("measured on h100") or d.startswith("measured on h200") for d in part.details) == 2
    named = [d for d in part.details if "the claim names the H100" in d]
    assert len(named) == 1 and "rows are from the H200" in named[0] and "1.43x the memory bandwidth" in named[0]
    assert "memory-bound, so the substitution matters" in named[0]


def test_claims_naming_the_h100_accept_h200_rows_and_mark_memory_bound_parts():
    rules = __import__("yaml").safe_load((ROOT / "configs" / "claims.yaml").read_text())["claims"]
    for cid in ("C1", "C3", "C5"):
        assert "h100" in rules[cid]["cards_named"]
        for part in rules[cid]["parts"]:
            if part["kind"] == "speedup" and "h100" in part["hardware"]:
                assert "h200" in part["hardware"], (cid, part["name"])
    assert rules["C3"]["parts"][0].get("memory_bound") is True


def test_line_counts_note_the_feature_gap_and_count_one_kernel():
    rules = __import__("yaml").safe_load((ROOT / "configs" / "claims.yaml").read_text())["claims"]
    fa3 = next(p for p in rules["C5"]["parts"] if p["kind"] == "loc_ratio" and "FA3" in p["name"])
    for feature in ("variable-length", "paged KV", "fp8", "softcapping", "local"):
        assert feature in fa3["note"]
    assert rules["C1"]["parts"][1]["select"]["backend"] == "^tilelang$"  # never the Ascend kernel too


def test_loc_budget_counts_the_kernel_and_names_the_whole(tmp_path):
    root = _write_results(tmp_path, _grid(1.0, 1.0))
    (root / "loc.csv").write_text("implementation,operator,code_lines,kernel_code_lines,status\n"
                                  "TileLang fa,flash_attention,180,90,ok\n")
    part = {"name": "lines", "kind": "loc_budget", "select": {"implementation": "(?i)tilelang"}, "budget": 100}
    rules = {"claims": {"X2": {"statement": "small", "parts": [part]}}}
    assert ledger.evaluate(rules, load(root))[0].verdict == V.NOT_SUPPORTED  # the whole count by default
    result = ledger.evaluate({"claims": {"X2": {"statement": "small", "parts": [
        {**part, "column": "kernel_code_lines"}]}}}, load(root))[0].parts[0]
    assert result.verdict == V.SUPPORTED
    assert "= 90 (180 with the scheduling and launch code it needs)" in result.numbers


def _bars(rows: list[dict], **spec):
    import pandas as pd

    from repro.report.plots import draw_bars

    frame = pd.DataFrame(rows)
    return draw_bars(frame, {"y": "median_ms", "label": ["M"], **spec}, ["M", "dtype"], "t", {})


def test_log_bar_axes_hold_the_bars_base():
    import matplotlib.pyplot as plt

    rows = [_row(m, "bf16", b, ms) for m, ms in ((1024, 0.03), (4096, 40.0)) for b in ("cublas", "tilelang")]
    fig = _bars(rows, logy=True)
    for ax in fig.axes:
        low = ax.get_ylim()[0]
        assert low > 0 and ax.patches
        for bar in ax.patches:  # every bar whole: its base on the axis, not cut off below it
            assert bar.get_y() >= low * (1 - 1e-9) and bar.get_y() + bar.get_height() <= ax.get_ylim()[1]
    plt.close(fig)


def test_bars_can_state_two_ratios_and_sparse_mla_states_flashmla():
    import matplotlib.pyplot as plt

    rows = [_row(1024, "bf16", "torch", 6.0), _row(1024, "bf16", "tilelang", 1.0), _row(1024, "bf16", "flash_mla", 0.6)]
    fig = _bars(rows, annotate_vs=["torch", "flash_mla"])
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "6.00× torch\n0.60× flash_mla" in texts
    plt.close(fig)
    config = __import__("yaml").safe_load((ROOT / "configs" / "report.yaml").read_text())
    figure = config["experiments"]["sparse_mla"]["figures"][0]
    assert "flash_mla" in figure["annotate_vs"] and "torch" in figure["annotate_vs"]


def test_published_numbers_of_another_card_are_not_drawn(tmp_path):
    from repro.report.figures import experiment_figures, published_here
    from repro.report.loc_figure import _best

    rows = [{**r, "source": ""} for r in _grid(1.3, 1.3)]
    rows.append({**_row(1024, "bf16", "cublas_paper", 0.5, "reported"), "tflops": 900.0,
                 "source": "vendor blog, H800 SXM5"})
    folder = tmp_path / "results" / "h100"
    folder.mkdir(parents=True)
    with open(folder / "gemm.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (folder / f"env-{RUN}.json").write_text(json.dumps({"run_id": RUN, "timestamp": "2026-01-02T03:04:05"}))
    results = load(tmp_path / "results")
    kept, away = published_here(results.rows("gemm", "h100"), "h100")
    assert not (kept["status"] == "reported").any() and away == "vendor blog, H800 SXM5"
    assert len(published_here(results.rows("gemm", "h100"), "h800")[0]) == len(rows)
    figures = experiment_figures(results, "gemm", {"figures": [{"kind": "bars", "y": "tflops", "label": ["M"]}]},
                                 tmp_path / "fig")
    assert figures and all("Not drawn: published figures from another card (vendor blog, H800 SXM5)" in f.caption
                           for f in figures)
    results.rows("gemm", "h100").loc[:, "status"]  # the loc figure's point: only measured or same-card figures
    assert _best(results, "gemm", "cublas", "h100") == (2.0, False)
    only_published = load(tmp_path / "results")
    frame = only_published.experiments["gemm"]
    only_published.experiments["gemm"] = frame[frame["backend"] != "cublas"]
    value, _ = _best(only_published, "gemm", "cublas", "h100")
    assert value != value  # the H800 figure never stands in for an H100 point


def _write_trials(root: Path, trials: dict) -> Path:
    """tilelang vs cublas on four cases, each (case M) with its paired trial medians."""
    folder = root / "results" / "h100"
    folder.mkdir(parents=True, exist_ok=True)
    fields = ["experiment", "case", "backend", "status", "median_ms", "tflops", "run_id", "trials", "trial_ms", "M"]
    with open(folder / "gemm.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for m, (base, mine) in trials.items():
            for backend, values in (("cublas", base), ("tilelang", mine)):
                ms = sorted(values)[len(values) // 2]
                writer.writerow({"experiment": "gemm", "case": f"M={m}", "backend": backend, "status": "ok",
                                 "median_ms": ms, "tflops": 1.0 / ms, "run_id": RUN, "trials": len(values),
                                 "trial_ms": ";".join(map(str, values)), "M": m})
    (folder / f"env-{RUN}.json").write_text(json.dumps({"run_id": RUN, "timestamp": "2026-01-02T03:04:05"}))
    return root / "results"


def test_an_interval_across_the_threshold_reads_within_noise(tmp_path):
    noisy = {m: ([1.0, 1.0, 1.0], [0.80, 1.05, 0.90]) for m in (1, 2, 3, 4)}  # ~1.1x, spread wide
    claim = ledger.evaluate(_rule(), load(_write_trials(tmp_path / "a", noisy)))[0]
    assert claim.parts[0].verdict == V.WITHIN_NOISE and claim.verdict == V.WITHIN_NOISE
    assert "95% interval" in claim.parts[0].numbers
    tight = {m: ([1.0, 1.0, 1.0], [0.70, 0.71, 0.69]) for m in (1, 2, 3, 4)}  # ~1.43x, clear of 1.1
    claim = ledger.evaluate(_rule(), load(_write_trials(tmp_path / "b", tight)))[0]
    assert claim.verdict == V.SUPPORTED and "95% interval" in claim.parts[0].numbers
    assert V.combine([V.SUPPORTED, V.WITHIN_NOISE]) == V.WITHIN_NOISE
    assert V.combine([V.NOT_SUPPORTED, V.WITHIN_NOISE]) == V.PARTLY
