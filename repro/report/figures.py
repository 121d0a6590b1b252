"""Per-experiment figures as the report config asks: one file per hardware (and per `split` value)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from repro.report import style
from repro.report.claim_notes import same_card
from repro.report.claim_parts import filter_cases
from repro.report.environment import hardware_label
from repro.report.load import Results, sort_rows
from repro.report.plots import Y_LABELS, annotated, draw_bars, draw_lines, in_panel


@dataclass
class Figure:
    """One written figure: its file stem (under paper/figures) and its caption."""
    key: str  # experiment (or "loc" / "scaling")
    hardware: str
    stem: Path
    caption: str
    headline: bool = False


def _split_values(rows: pd.DataFrame, split: list[str]) -> list[tuple]:
    split = [s for s in split if s in rows]
    if not split:
        return [()]
    return [tuple(v) for v in sort_rows(rows.drop_duplicates(split), split)[split].itertuples(index=False)]


def experiment_figures(results: Results, name: str, spec: dict, out: Path, labels: dict | None = None,
                       coverage: dict | None = None) -> list[Figure]:
    """Every figure the report config asks for, one file per hardware (and per split value)."""
    written, frame, params = [], results.rows(name), results.params.get(name, [])
    labels = {**(labels or {}), **spec.get("backend_labels", {})}
    for fig_spec in spec.get("figures") or [{"kind": "bars", "y": "tflops"}]:
        needed = [fig_spec.get("x")] + list(fig_spec.get("panels", []))
        if any(k and k not in frame for k in needed):
            continue  # this experiment's results lack a parameter the figure needs
        for hw in sorted(frame["hardware"].unique()):
            rows, elsewhere = published_here(filter_cases(frame[frame["hardware"] == hw], fig_spec.get("where")), hw)
            y = fig_spec.get("y", "tflops")
            if y not in rows or rows[rows["status"].isin(["ok", "reported"])][y].notna().sum() == 0:
                continue
            split = [s for s in fig_spec.get("split", []) if s in rows]
            for values in _split_values(rows, split):
                mine = in_panel(rows, split, values)
                if mine[mine["status"].isin(["ok", "reported"])][y].notna().sum() == 0:
                    continue
                gaps = _gaps(coverage or {}, name, hw, spec, fig_spec.get("where"))
                if elsewhere:
                    gaps = (f"Not drawn: published figures from another card ({elsewhere}). " + gaps).strip()
                written.append(_one_figure(results, name, spec, hw, fig_spec, split, values, mine, params, out,
                                           labels, gaps))
    return written


def published_here(rows: pd.DataFrame, hw: str) -> tuple[pd.DataFrame, str]:
    """(rows without the published figures whose source does not name this card, those sources):
    a number published for another card (FlashMLA's H800 figures) is never a point on this card's chart."""
    reported = rows["status"] == "reported"
    source = rows["source"].astype(str) if "source" in rows else pd.Series("", index=rows.index)
    away = reported & ~source.map(lambda text: same_card(text, hw)).astype(bool)
    names = sorted(set(source[away]) - {""})
    if away.any() and not names:
        names = ["their source names no card"]
    return rows[~away].copy(), "; ".join(names)


def _gaps(coverage: dict, name: str, hw: str, spec: dict, where: str | None) -> str:
    """'Planned but not run: ...' for the figure's cases, from the sweep's plan."""
    from repro.report.coverage import missing_lines

    found = coverage.get((name, hw))
    if found is None:
        return ""
    _, _, lines = missing_lines(found[0], spec.get("coverage_by", []), spec.get("coverage_prefer", []), where)
    return ("Planned but not run: " + "; ".join(lines) + ".") if lines else ""


def _sources(rows: pd.DataFrame) -> str:
    reported = rows[rows["status"] == "reported"]
    found = sorted(set(reported["source"].astype(str)) - {""}) if "source" in reported else []
    return "; ".join(found)


def _one_figure(results, name, spec, hw, fig_spec, split, values, rows, params, out, labels, gaps) -> Figure:
    title = spec.get("title", name)
    parts = [name, hw] + ([fig_spec["name"]] if fig_spec.get("name") else []) + [str(v) for v in values]
    stem = out / "-".join(p.replace(" ", "").replace("/", "_") for p in parts)
    where = ", ".join(f"{k}={v}" for k, v in zip(split, values))
    subset = "; ".join(t for t in (fig_spec.get("caption", ""), where) if t)
    label = hardware_label(results, hw)
    short = "; ".join(t for t in (fig_spec.get("heading", fig_spec.get("caption", "")), where) if t)
    heading = f"{title}{' (' + short + ')' if short else ''}\n{label}"
    lines = fig_spec.get("kind", "bars") == "lines"
    bar_spec = {**fig_spec, "subject": spec.get("subject", "tilelang")}
    fig = draw_lines(rows, fig_spec, heading, labels) if lines else draw_bars(rows, bar_spec, params, heading, labels)
    style.save(fig, stem)
    marks = ("measured: solid lines, filled markers; reported by others: dashed lines, hollow markers" if lines
             else "measured: filled bars; reported by others: hollow dashed bars")
    ours = rows[(rows["status"] == "ok") & rows["backend"].isin(style.TILELANG_FIRST)]["backend"]
    if set(style.TILELANG_FIRST) <= set(ours):
        marks += ("; two TileLang " + ("lines" if lines else "bars per case")
                  + ": this suite's kernel (tilelang) and TileLang's own published example (tilelang_upstream)")
    if annotated(fig_spec):
        marks += (f"; numbers above the bars: {' and '.join(annotated(fig_spec))}'s time / "
                  f"{spec.get('subject', 'tilelang')}'s time")
    if fig_spec.get("logy") and not lines:
        marks += "; log axis, bars drawn from its lower limit (a power of ten)"
    caption = (f"{title}{' (' + subset + ')' if subset else ''} on {label}. "
               f"{_upper_first(Y_LABELS.get(fig_spec.get('y', 'tflops'), 'value'))} per backend; {marks}.")
    if (sources := _sources(rows)):
        caption += f" Reported: {sources}."
    if gaps:
        caption += " " + gaps
    return Figure(name, hw, stem, caption, bool(fig_spec.get("headline")))


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]
