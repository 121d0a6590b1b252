"""Per-experiment tables: throughput per backend, the best marked, speedups vs baselines, % of peak."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from repro.report import style
from repro.report.environment import hardware_label
from repro.report.load import Results, sort_rows
from repro.report.render import latex_escape, latex_table, markdown_table, write


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    best: list[int | None]  # per row, the column index of the best backend's cell
    fixed: str  # parameters constant over the table, for the caption
    metric: str  # "tflops" or "median_ms"
    summary: list[str]  # one line per baseline: geomean speedup of the subject


def _metric(rows: pd.DataFrame) -> str:
    """TFLOPS where the experiment reports it, else time (e.g. top-k has no FLOP count)."""
    return "tflops" if rows["tflops"].notna().any() else "median_ms"


def _cell(row: pd.Series, metric: str) -> str:
    if row["status"] != "ok":
        return row["status"]
    value = row[metric]
    if value != value:  # correctness-only backend: checked, not timed
        return "checked"
    return f"{value:.0f}" if metric == "tflops" and value >= 100 else f"{value:.3g}"


def _speedup_text(subject: pd.Series | None, base: pd.Series | None) -> tuple[str, float]:
    ok = subject is not None and base is not None and subject["status"] == base["status"] == "ok"
    if not ok or not (subject["median_ms"] > 0 and base["median_ms"] > 0):
        return "–", float("nan")
    value = base["median_ms"] / subject["median_ms"]
    return f"{value:.2f}x", value


def _best(group: pd.DataFrame, metric: str):
    timed = group[(group["status"] == "ok") & group[metric].notna()]
    if timed.empty:
        return None
    return timed.loc[timed[metric].idxmax() if metric == "tflops" else timed[metric].idxmin(), "backend"]


def build_table(rows: pd.DataFrame, params: list[str], subject: str, baselines: list[str]) -> Table:
    """`rows`: one experiment on one hardware, measured rows only."""
    varying = [p for p in params if p in rows and rows[p].astype(str).nunique() > 1]
    fixed = ", ".join(f"{p}={rows[p].iloc[0]}" for p in params if p in rows and p not in varying)
    metric, backends = _metric(rows), style.order(rows["backend"])
    baselines = [b for b in baselines if b in backends and b != subject]
    unit = "TFLOPS" if metric == "tflops" else "ms"
    header = varying + [f"{b} ({unit})" for b in backends] + ["best"]
    header += [f"{subject} vs {b}" for b in baselines] + [f"{subject} % peak"]
    table = Table(header, [], [], fixed, metric, [])
    speedups: dict[str, list[float]] = {b: [] for b in baselines}
    for case, group in sort_rows(rows, varying + ["backend"]).groupby("case", sort=False):
        by_backend = {r["backend"]: r for _, r in group.iterrows()}
        first = group.iloc[0]
        cells = [str(first[p]) for p in varying] + [_cell(by_backend[b], metric) if b in by_backend else "–"
                                                      for b in backends]
        best = _best(group, metric)
        cells.append(best or "–")
        for b in baselines:
            text, value = _speedup_text(by_backend.get(subject), by_backend.get(b))
            cells.append(text)
            if value == value:
                speedups[b].append(value)
        frac = by_backend[subject]["peak_fraction"] if subject in by_backend else float("nan")
        cells.append(f"{100 * frac:.0f}%" if frac == frac else "–")
        table.rows.append(cells)
        table.best.append(len(varying) + backends.index(best) if best else None)
    for b, values in speedups.items():
        if values:
            geo = math.exp(sum(map(math.log, values)) / len(values))
            table.summary.append(f"{subject} vs {b}: geomean {geo:.2f}x over {len(values)} cases")
    return table


def table_markdown(table: Table) -> str:
    rows = [[f"**{c}**" if i == best else c for i, c in enumerate(row)] for row, best in zip(table.rows, table.best)]
    align = "".join("r" if h.endswith(")") or " vs " in h or "%" in h else "l" for h in table.header)
    return markdown_table(table.header, rows, align)


def table_latex(table: Table, caption: str, label: str) -> str:
    rows = [[f"\\textbf{{{latex_escape(c)}}}" if i == best else latex_escape(c) for i, c in enumerate(row)]
            for row, best in zip(table.rows, table.best)]
    align = "".join("r" if h.endswith(")") or " vs " in h or "%" in h else "l" for h in table.header)
    return latex_table(table.header, rows, caption, label, align=align, escaped=True)


def reported_rows(rows: pd.DataFrame, params: list[str]) -> tuple[list[str], list[list[str]]]:
    """Published third-party figures kept beside the measurements, never mixed into them."""
    keep = [p for p in params if p in rows and rows[p].astype(str).nunique() > 1]
    header = keep + ["backend", "TFLOPS", "GB/s", "source"]
    body = []
    for _, r in sort_rows(rows, keep + ["backend"]).iterrows():
        num = [f"{r[c]:.0f}" if r[c] == r[c] else "–" for c in ("tflops", "gbps")]
        body.append([str(r[p]) for p in keep] + [r["backend"]] + num + [r["source"]])
    return header, body


def write_experiment(results: Results, name: str, spec: dict, subject: str, out: Path) -> list[Path]:
    """paper/tables/<name>.md and .tex: one section per hardware, measured then reported."""
    title = spec.get("title", name)
    frame, params = results.rows(name), results.params.get(name, [])
    md, tex = [f"# {title}\n"], []
    for hw in sorted(frame["hardware"].unique()):
        rows = frame[frame["hardware"] == hw]
        label = hardware_label(results, hw)
        md.append(f"## {label}\n")
        measured, published = rows[rows["status"] != "reported"], rows[rows["status"] == "reported"]
        if not measured.empty:
            table = build_table(measured, params, subject, spec.get("baselines", []))
            unit = "TFLOPS" if table.metric == "tflops" else "median time (ms)"
            note = (f"{unit} per backend (best in bold); speedup = baseline time / {subject} time; "
                    f"% peak = {subject} against the datasheet peak. Fixed: {table.fixed or 'none'}.")
            md += [note + "\n", table_markdown(table) + "\n"] + [f"- {s}" for s in table.summary] + [""]
            caption = f"{title} on {label}. {note}"
            tex.append(table_latex(table, caption, f"tab:{name}-{hw}"))
        if not published.empty:
            header, body = reported_rows(published, params)
            md += ["Published figures (reported by others, not measured here):\n", markdown_table(header, body), ""]
            tex.append(latex_table(header, body, f"{title}: published figures, not measured here ({hw} folder).",
                                   f"tab:{name}-{hw}-reported", align="l" * (len(header) - 1) + "p{0.35\\linewidth}"))
        csv = sorted(set(rows["csv"]))
        md.append("Source: " + ", ".join(f"`{c}`" for c in csv) + "\n")
    return [write(out / f"{name}.md", "\n".join(md)), write(out / f"{name}.tex", "\n".join(tex))]
