"""Per-experiment tables: throughput per backend, the best marked, speedups vs baselines, % of peak."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from repro.measure.stats import case_interval, parse_trials

from repro.report import style
from repro.report.claim_parts import carried_by, pair_speedups  # the ledger's own best-of pairing
from repro.report.environment import hardware_label
from repro.report.load import Results, sort_rows
from repro.report.render import latex_escape, latex_table, markdown_table, write
from repro.results.store import Status


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    best: list[int | None]  # per row, the column index of the best backend's cell
    fixed: str  # parameters constant over the table, for the caption
    metric: str  # "tflops" or "median_ms"
    summary: list[str]  # one line per baseline: geomean speedup of the subject
    checked: list[str]  # correctness-only backends (no timing column)


HIGHER_IS_BETTER = ("tflops", "gbps")
UNITS = {"tflops": "TFLOPS", "gbps": "GB/s", "median_ms": "median time (ms)"}


def _metric(rows: pd.DataFrame, spec: dict) -> str:
    """The configured `metric`; else TFLOPS where the experiment reports it, else time."""
    if spec.get("metric"):
        return spec["metric"]
    return "tflops" if rows["tflops"].notna().any() else "median_ms"


def _cell(row: pd.Series, metric: str) -> str:
    if row["status"] != Status.OK:
        return row["status"]
    value = row[metric]
    if value != value:  # correctness-only backend: checked, not timed
        return "checked"
    return f"{value:.0f}" if metric in HIGHER_IS_BETTER and value >= 100 else f"{value:.3g}"


def _speedup_text(subject: pd.Series | None, base: pd.Series | None) -> tuple[str, float]:
    ok = subject is not None and base is not None and subject["status"] == base["status"] == Status.OK
    if not ok or not (subject["median_ms"] > 0 and base["median_ms"] > 0):
        return "–", float("nan")
    value = base["median_ms"] / subject["median_ms"]
    _, low, high = case_interval(parse_trials(base.get("trial_ms")), parse_trials(subject.get("trial_ms")))
    interval = f" [{low:.2f}–{high:.2f}]" if low == low and high == high else ""  # 95%, paired trials
    return f"{value:.2f}x{interval}", value


def _best(group: pd.DataFrame, metric: str):
    timed = group[(group["status"] == Status.OK) & group[metric].notna()]
    if timed.empty:
        return None
    return timed.loc[timed[metric].idxmax() if metric in HIGHER_IS_BETTER else timed[metric].idxmin(), "backend"]


def shown_params(rows: pd.DataFrame, params: list[str], spec: dict) -> list[str]:
    """Varying parameters in the configured order, minus `table_hide` ones while cases stay distinct."""
    varying = [p for p in params if p in rows and rows[p].astype(str).nunique() > 1]
    first = [p for p in spec.get("order_by", []) if p in varying]
    varying = first + [p for p in varying if p not in first]
    kept = [p for p in varying if p not in spec.get("table_hide", [])]
    distinct = rows.drop_duplicates("case")
    if kept != varying and len(distinct.drop_duplicates(kept)) < len(distinct):
        return varying  # hiding would merge different cases into one row
    return kept


def _timed_backends(rows: pd.DataFrame, metric: str) -> tuple[list[str], list[str]]:
    """(backends with a timing or a failure to show, correctness-only backends)."""
    shown, checked = [], []
    for backend in style.order(rows["backend"]):
        mine = rows[rows["backend"] == backend]
        only_checked = (mine["status"] == Status.OK).all() and mine[metric].isna().all()
        (checked if only_checked else shown).append(backend)
    return shown, checked


def build_table(rows: pd.DataFrame, params: list[str], subject: str, spec: dict) -> Table:
    """`rows`: one experiment on one hardware, measured rows only."""
    columns = shown_params(rows, params, spec)
    fixed = ", ".join(f"{p}={rows[p].iloc[0]}" for p in params if p in rows and rows[p].astype(str).nunique() == 1)
    metric = _metric(rows, spec)
    backends, checked = _timed_backends(rows, metric)
    baselines = [b for b in spec.get("baselines", []) if b in backends and b != subject]
    short = spec.get("short", {})
    header = [short.get(p, p) for p in columns] + backends + [f"vs {b}" for b in baselines] + ["% peak"]
    table = Table(header, [], [], fixed, metric, [], checked)
    speedups: dict[str, list[float]] = {b: [] for b in baselines}
    for _, group in sort_rows(rows, columns + ["case", "backend"]).groupby("case", sort=False):
        by_backend = {r["backend"]: r for _, r in group.iterrows()}
        cells = [str(group.iloc[0][p]) for p in columns]
        cells += [_cell(by_backend[b], metric) if b in by_backend else "–" for b in backends]
        best = _best(group[group["backend"].isin(backends)], metric)
        for b in baselines:
            text, value = _speedup_text(by_backend.get(subject), by_backend.get(b))
            cells.append(text)
            if value == value:
                speedups[b].append(value)
        frac = by_backend[subject]["roofline_frac"] if subject in by_backend else float("nan")
        cells.append(f"{100 * frac:.0f}%" if frac == frac else "–")
        table.rows.append(cells)
        table.best.append(len(columns) + backends.index(best) if best else None)
    for b, values in speedups.items():
        if values:
            geo = math.exp(sum(map(math.log, values)) / len(values))
            table.summary.append(f"{subject} vs {b}: geomean {geo:.2f}x over {len(values)} cases")
            table.summary += best_of_summary(rows, subject, b, spec)
    return table


def best_of_summary(rows: pd.DataFrame, subject: str, baseline: str, spec: dict) -> list[str]:
    """Where another TileLang implementation (`best_of`: TileLang's own example) measured some case ok:
    the speedup of the faster per case, and which one carried how many cases (as the ledger grades)."""
    best_of = [b for b in spec.get("best_of") or [] if b]
    if subject not in best_of or not ((rows["backend"].isin(best_of)) & (rows["backend"] != subject)
                                      & (rows["status"] == Status.OK)).any():
        return []
    paired, _ = pair_speedups(rows, subject, [baseline], best_of)
    if paired.empty:
        return []
    geo = math.exp(paired["speedup"].map(math.log).mean())
    return [f"best of {' and '.join(best_of)} per case vs {baseline}: geomean {geo:.2f}x over {len(paired)} "
            f"cases (carried by: {carried_by(paired, best_of)})"]


def _align(table: Table) -> str:
    """Every cell is a number or a short word: right-aligned columns read best."""
    return "r" * len(table.header)


def table_markdown(table: Table) -> str:
    rows = [[f"**{c}**" if i == best else c for i, c in enumerate(row)] for row, best in zip(table.rows, table.best)]
    return markdown_table(table.header, rows, _align(table))


def table_latex(table: Table, caption: str, label: str) -> str:
    rows = [[f"\\textbf{{{latex_escape(c)}}}" if i == best else latex_escape(c) for i, c in enumerate(row)]
            for row, best in zip(table.rows, table.best)]
    return latex_table(table.header, rows, caption, label, align=_align(table), escaped=True)


def reported_rows(rows: pd.DataFrame, params: list[str], spec: dict) -> tuple[list[str], list[list[str]], str]:
    """Published third-party TFLOPS, one column per backend, kept apart from the measurements."""
    keep = shown_params(rows, params, spec)
    backends = style.order(rows["backend"])
    short = spec.get("short", {})
    header, body = [short.get(p, p) for p in keep] + backends, []
    for _, group in sort_rows(rows, keep + ["case", "backend"]).groupby("case", sort=False):
        by_backend = {r["backend"]: r["tflops"] for _, r in group.iterrows()}
        cells = [f"{by_backend[b]:.0f}" if b in by_backend and by_backend[b] == by_backend[b] else "–"
                 for b in backends]
        body.append([str(group.iloc[0][p]) for p in keep] + cells)
    sources = "; ".join(sorted(set(rows["source"]) - {""})) or "source not recorded"
    return header, body, sources


def coverage_notes(results: Results, name: str, hw: str, spec: dict, coverage: dict) -> list[str]:
    """What the sweep planned (configs/experiment/<name>.yaml) and this hardware's results lack."""
    from repro.report.coverage import backend_gaps, missing_lines

    found = coverage.get((name, hw))
    if found is None:
        return []
    cov = found[0]
    planned, run, lines = missing_lines(cov, spec.get("coverage_by", []), spec.get("coverage_prefer", []))
    head = f"Run {run} of the {planned} cases planned in `configs/experiment/{name}.yaml`"
    return [head + ("." if not lines else "; not run:")] + [f"- {l}" for l in lines] + \
        [f"- backend {g}" for g in backend_gaps(results, cov)]


def backend_notes(backends, spec: dict, config_notes: dict) -> str:
    notes = {**config_notes, **spec.get("backend_notes", {})}
    return " ".join(f"{b}: {notes[b]}." for b in backends if b in notes)


def write_experiment(results: Results, name: str, spec: dict, subject: str, out: Path,
                     coverage: dict | None = None, config_notes: dict | None = None) -> list[Path]:
    """paper/tables/<name>.md and .tex: one section per hardware, measured then reported."""
    subject = spec.get("subject", subject)  # e.g. membw has no TileLang row: its copy is the subject
    title = spec.get("title", name)
    frame, params = results.rows(name), results.params.get(name, [])
    md, tex = [f"# {title}\n"], []
    for hw in sorted(frame["hardware"].unique()):
        rows = frame[frame["hardware"] == hw]
        label = hardware_label(results, hw)
        md.append(f"## {label}\n")
        measured, published = rows[rows["status"] != Status.REPORTED], rows[rows["status"] == Status.REPORTED]
        if not measured.empty:
            table = build_table(measured, params, subject, spec)
            unit = UNITS[table.metric]
            note = (f"{unit} per backend, the best in bold; vs X = X's time / {subject}'s time (above 1: "
                    f"{subject} faster); % peak = {subject}'s larger share of the datasheet peak, compute "
                    f"or HBM bandwidth. Fixed: {table.fixed or 'none'}.")
            if (known := backend_notes(table.header, spec, config_notes or {})):
                note += " " + known
            if table.checked:
                note += f" Correctness reference only (not timed): {', '.join(table.checked)}."
            md += [note + "\n", table_markdown(table) + "\n"] + [f"- {s}" for s in table.summary] + [""]
            caption = f"{title} on {label}. {note}"
            tex.append(table_latex(table, caption, f"tab:{name}-{hw}"))
        if not published.empty:
            header, body, sources = reported_rows(published, params, spec)
            md += [f"Published TFLOPS, reported by others and not measured here (source: {sources}):\n",
                   markdown_table(header, body, "r" * len(header)), ""]
            tex.append(latex_table(header, body, f"{title}: published TFLOPS, not measured here. Source: {sources}.",
                                   f"tab:{name}-{hw}-reported", align="r" * len(header)))
        gaps = coverage_notes(results, name, hw, spec, coverage or {})
        if gaps:
            md += gaps + [""]
            tex.append(latex_escape(gaps[0]) + ("\n\\begin{itemize}\n" + "".join(
                f"\\item {latex_escape(g[2:])}\n" for g in gaps[1:]) + "\\end{itemize}\n" if gaps[1:] else "\n"))
        csv = sorted(set(rows["csv"]))
        md.append("Source: " + ", ".join(f"`{c}`" for c in csv) + "\n")
    return [write(out / f"{name}.md", "\n".join(md)), write(out / f"{name}.tex", "\n".join(tex))]
