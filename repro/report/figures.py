"""Per-experiment figures: throughput (or time) per backend, measured solid, reported dashed."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from repro.report import style
from repro.report.claim_parts import filter_cases
from repro.report.environment import hardware_label
from repro.report.load import Results, sort_rows

Y_LABELS = {"tflops": "throughput (TFLOPS)", "gbps": "bandwidth (GB/s)", "median_ms": "median time (ms)"}


@dataclass
class Figure:
    """One written figure: its file stem (under paper/figures) and its caption."""
    key: str  # experiment (or "loc" / "scaling")
    hardware: str
    stem: Path
    caption: str
    headline: bool = False


def short_number(value) -> str:
    """4096 -> '4k', 16384 -> '16k', 512 -> '512' (axis ticks)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if number >= 1024 and number % 1024 == 0:
        return f"{number / 1024:.0f}k"
    return f"{number:g}"


def _panel_grid(keys: list[str], rows: pd.DataFrame) -> tuple[list[tuple], int, int]:
    """Panel values in order, and a grid: two keys -> rows x columns, else wrap at three per row."""
    values = [tuple(v) for v in sort_rows(rows.drop_duplicates(keys), keys)[keys].itertuples(index=False)]
    first = sorted({v[0] for v in values}, key=lambda x: (str(type(x)), x)) if keys else []
    second = sorted({v[1] for v in values}, key=lambda x: (str(type(x)), x)) if len(keys) == 2 else []
    if len(first) > 1 and len(second) > 1:  # a true grid: rows by the first key, columns by the second
        return list(itertools.product(first, second)), len(first), len(second)
    ncols = min(3, len(values)) or 1
    return values, -(-len(values) // ncols), ncols


def _plot_series(ax, rows: pd.DataFrame, x: str, y: str) -> None:
    for reported in (False, True):
        part = rows[rows["status"] == "reported"] if reported else rows[rows["status"] == "ok"]
        for backend in style.order(part["backend"]):
            mine = part[part["backend"] == backend].dropna(subset=[y])
            if mine.empty:
                continue
            # Several rows per x (e.g. a parameter outside panels/split): show the median.
            series = mine.groupby(x, sort=True)[y].median()
            ax.plot(list(series.index), list(series.values), **style.line_style(backend, reported))


def _legend(fig, axes) -> None:
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    measured = sorted((l for l in handles if not l.endswith("(reported)")), key=lambda l: (l != "tilelang", l))
    labels = measured + sorted(l for l in handles if l.endswith("(reported)"))
    if labels:
        # "outside" places the legend below the panels within the constrained layout: never on the data.
        fig.legend([handles[l] for l in labels], labels, loc="outside lower center", ncol=min(len(labels), 5),
                   frameon=False)


def draw_lines(rows: pd.DataFrame, spec: dict, title: str):
    x, y, keys = spec["x"], spec.get("y", "tflops"), list(spec.get("panels", []))
    panels, nrows, ncols = _panel_grid(keys, rows) if keys else ([()], 1, 1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.5 * nrows + 1.2), squeeze=False,
                             sharex=True, sharey=spec.get("sharey", False), layout="constrained")
    flat = list(axes.flat)
    ticks = sorted(set(rows[x].dropna()))
    for ax, values in zip(flat, panels):
        mine = rows
        for key, value in zip(keys, values):
            mine = mine[mine[key].astype(str) == str(value)]
        _plot_series(ax, mine, x, y)
        ax.set_title(", ".join(f"{k}={v}" for k, v in zip(keys, values)) or None)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [short_number(t) for t in ticks])
        ax.minorticks_off()
        if spec.get("logy"):
            ax.set_yscale("log")
        elif y != "median_ms":
            ax.set_ylim(bottom=0)
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(spec.get("xlabel", x))
        ax.tick_params(axis="x", labelrotation=45 if len(ticks) > 6 else 0)
    for ax in axes[:, 0]:
        ax.set_ylabel(Y_LABELS.get(y, y))
    fig.suptitle(title, fontsize=10)
    _legend(fig, flat)
    return fig


def draw_bars(rows: pd.DataFrame, spec: dict, params: list[str], title: str):
    """Grouped bars: one group per case (the varying parameters), one bar per backend."""
    y, keys = spec.get("y", "tflops"), list(spec.get("panels", []))
    panels, _, _ = _panel_grid(keys, rows) if keys else ([()], 1, 1)
    shown = rows[rows["status"].isin(["ok", "reported"])].dropna(subset=[y])
    labels_of = [p for p in params if p not in keys and p in rows and rows[p].astype(str).nunique() > 1]
    ncases = max(1, max(len(_cases_in(shown, keys, v, labels_of)) for v in panels))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(5.0, 0.8 * ncases + 2.0), 2.8 * len(panels) + 1.4),
                             squeeze=False, layout="constrained")
    for ax, values in zip(axes[:, 0], panels):
        cases = _cases_in(shown, keys, values, labels_of)
        mine = _in_panel(shown, keys, values)
        backends = [(b, False) for b in style.order(mine.loc[mine["status"] == "ok", "backend"])]
        backends += [(b, True) for b in style.order(mine.loc[mine["status"] == "reported", "backend"])]
        width = 0.8 / max(1, len(backends))
        for i, (backend, reported) in enumerate(backends):
            sel = mine[(mine["backend"] == backend) & ((mine["status"] == "reported") == reported)]
            heights = sel.groupby("_label")[y].median()
            xs = [j + (i - (len(backends) - 1) / 2) * width for j, c in enumerate(cases) if c in heights]
            kw = style.line_style(backend, reported)
            ax.bar(xs, [heights[c] for c in cases if c in heights], width * 0.92, label=kw["label"],
                   color="white" if reported else kw["color"], edgecolor=kw["color"],
                   linestyle="--" if reported else "-", linewidth=1.0)
        tilt = len(cases) > 4 or max(map(len, cases), default=0) > 9
        ax.set_xticks(range(len(cases)), cases, rotation=25 if tilt else 0, ha="right" if tilt else "center",
                      rotation_mode="anchor")
        ax.set_title(", ".join(f"{k}={v}" for k, v in zip(keys, values)) or None)
        ax.set_ylabel(Y_LABELS.get(y, y))
        ax.grid(axis="x", visible=False)
    axes[-1, 0].set_xlabel(spec.get("xlabel", "×".join(labels_of) or "case"))
    fig.suptitle(title, fontsize=10)
    _legend(fig, list(axes.flat))
    return fig


def _in_panel(rows: pd.DataFrame, keys: list[str], values: tuple) -> pd.DataFrame:
    for key, value in zip(keys, values):
        rows = rows[rows[key].astype(str) == str(value)]
    return rows


def _cases_in(rows: pd.DataFrame, keys: list[str], values: tuple, labels_of: list[str]) -> list[str]:
    """Case labels of one panel, in parameter order ('4096×4096×4096'); also sets rows['_label']."""
    rows["_label"] = ["×".join(str(v) for v in t) or "all" for t in rows[labels_of].itertuples(index=False)] \
        if labels_of else "all"
    mine = sort_rows(_in_panel(rows, keys, values), labels_of) if labels_of else _in_panel(rows, keys, values)
    return list(dict.fromkeys(mine["_label"]))


def _split_values(rows: pd.DataFrame, split: list[str]) -> list[tuple]:
    split = [s for s in split if s in rows]
    if not split:
        return [()]
    return [tuple(v) for v in sort_rows(rows.drop_duplicates(split), split)[split].itertuples(index=False)]


def experiment_figures(results: Results, name: str, spec: dict, out: Path) -> list[Figure]:
    """Every figure the report config asks for, one file per hardware (and per split value)."""
    written, frame, params = [], results.rows(name), results.params.get(name, [])
    title = spec.get("title", name)
    for fig_spec in spec.get("figures") or [{"kind": "bars", "y": "tflops"}]:
        needed = [fig_spec.get("x")] + list(fig_spec.get("panels", []))
        if any(k and k not in frame for k in needed):
            continue  # this experiment's results lack a parameter the figure needs
        for hw in sorted(frame["hardware"].unique()):
            rows = filter_cases(frame[frame["hardware"] == hw], fig_spec.get("where")).copy()
            y = fig_spec.get("y", "tflops")
            if y not in rows or rows[rows["status"].isin(["ok", "reported"])][y].notna().sum() == 0:
                continue
            split = [s for s in fig_spec.get("split", []) if s in rows]
            for values in _split_values(rows, split):
                mine = _in_panel(rows, split, values)
                if mine[mine["status"].isin(["ok", "reported"])][y].notna().sum() == 0:
                    continue
                written.append(_one_figure(results, name, title, hw, fig_spec, split, values, mine, params, out))
    return written


def _one_figure(results, name, title, hw, fig_spec, split, values, rows, params, out) -> Figure:
    parts = [name, hw] + ([fig_spec["name"]] if fig_spec.get("name") else []) + [str(v) for v in values]
    stem = out / "-".join(p.replace(" ", "").replace("/", "_") for p in parts)
    where = ", ".join(f"{k}={v}" for k, v in zip(split, values))
    subset = "; ".join(t for t in (fig_spec.get("caption", ""), where) if t)
    label = hardware_label(results, hw)
    heading = f"{title}{' (' + subset + ')' if subset else ''}\n{label}"
    lines = fig_spec.get("kind", "bars") == "lines"
    fig = draw_lines(rows, fig_spec, heading) if lines else draw_bars(rows, fig_spec, params, heading)
    style.save(fig, stem)
    marks = ("measured: solid lines, filled markers; reported by others: dashed lines, hollow markers" if lines
             else "measured: filled bars; reported by others: hollow dashed bars")
    caption = (f"{title}{' (' + subset + ')' if subset else ''} on {label}. "
               f"{_upper_first(Y_LABELS.get(fig_spec.get('y', 'tflops'), 'value'))} per backend; {marks}.")
    return Figure(name, hw, stem, caption, bool(fig_spec.get("headline")))


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]
