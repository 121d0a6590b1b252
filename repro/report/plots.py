"""Drawing one experiment figure: lines over a swept parameter, or grouped bars per case.

Measured rows: solid lines / filled bars. Published ("reported") rows: dashed lines, hollow markers
or bars, in the backend's colour. Panels that lack planned points say so in their titles.
"""
from __future__ import annotations

import itertools
import math

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from repro.report import style
from repro.report.load import sort_rows

Y_LABELS = {"tflops": "throughput (TFLOPS)", "gbps": "bandwidth (GB/s)",
            "median_ms": "median time (ms; lower is better)"}
STYLE_LINES = ["-", ":", "-."]  # per value of a figure's `style_by` parameter (measured rows)
STYLE_FILLS = ["full", "left", "bottom"]  # and marker fills, so single points differ too


def short_number(value) -> str:
    """4096 -> '4k', 16384 -> '16k', 512 -> '512' (axis ticks)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if number >= 1024 and number % 1024 == 0:
        return f"{number / 1024:g}k"
    return f"{number:g}"


def _sorted(values) -> list:
    return sorted(set(values), key=lambda v: (str(type(v)), v))


def panel_grid(keys: list[str], rows: pd.DataFrame) -> tuple[list[tuple], int, int]:
    """Panel values in order, and a grid: two keys -> rows x columns, else wrap at three per row."""
    values = [tuple(v) for v in sort_rows(rows.drop_duplicates(keys), keys)[keys].itertuples(index=False)]
    first = _sorted(v[0] for v in values) if keys else []
    second = _sorted(v[1] for v in values) if len(keys) == 2 else []
    if len(first) > 1 and len(second) > 1:  # a true grid: rows by the first key, columns by the second
        return list(itertools.product(first, second)), len(first), len(second)
    ncols = min(3, len(values)) or 1
    return values, -(-len(values) // ncols), ncols


def in_panel(rows: pd.DataFrame, keys: list[str], values: tuple) -> pd.DataFrame:
    for key, value in zip(keys, values):
        rows = rows[rows[key].astype(str) == str(value)]
    return rows


def panel_title(keys: list[str], values: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values))


def _missing_note(rows: pd.DataFrame, x: str, ticks: list, style_key: str | None) -> str:
    """'not run: 8k, 16k' for the x values of the figure that this panel measured nowhere."""
    ok = rows[rows["status"] == "ok"]
    groups = [(None, ok)] if not style_key else [(v, ok[ok[style_key] == v]) for v in _sorted(rows[style_key])]
    parts = []
    for value, mine in groups:
        gone = [t for t in ticks if t not in set(mine[x])]
        if gone:
            label = f"{value}: " if value is not None else ""
            parts.append(label + ("all" if len(gone) == len(ticks) else ", ".join(map(short_number, gone))))
    if ok.empty:
        return "not run"
    return "not run: " + "; ".join(parts) if parts else ""


def _plot_series(ax, rows: pd.DataFrame, x: str, y: str, style_key: str | None, labels: dict) -> None:
    styles = {v: i for i, v in enumerate(_sorted(rows[style_key]))} if style_key else {None: 0}
    for reported in (False, True):
        part = rows[rows["status"] == ("reported" if reported else "ok")]
        for backend in style.order(part["backend"]):
            for value, index in styles.items():
                mine = part[part["backend"] == backend]
                mine = mine if value is None else mine[mine[style_key] == value]
                mine = mine.dropna(subset=[y])
                if mine.empty:
                    continue
                series = mine.groupby(x, sort=True)[y].median()  # several rows per x: their median
                kw = style.line_style(backend, reported, labels.get(backend))
                if not reported:
                    kw["linestyle"] = STYLE_LINES[index % len(STYLE_LINES)]
                    kw.update(fillstyle=STYLE_FILLS[index % len(STYLE_FILLS)], markerfacecoloralt="white")
                ax.plot(list(series.index), list(series.values), **kw)


def bottom_labels(axes, shown: int, label: str, rotation: int = 0) -> None:
    """x label and tick labels on the lowest visible panel of each column (shared x axes)."""
    nrows, ncols = axes.shape
    for col in range(ncols):
        visible = [r for r in range(nrows) if r * ncols + col < shown]
        if visible:
            ax = axes[visible[-1], col]
            ax.xaxis.set_tick_params(labelbottom=True, labelrotation=rotation)
            ax.set_xlabel(label)


def log_ticks(ax) -> None:
    """Log axis ticks at 1, 2, 5 x 10^k written as plain numbers (0.02, 0.5, 10)."""
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def legend(fig, axes, extra: list[tuple[str, Line2D]] = (), ncol: int = 5) -> None:
    """One legend below the panels, read row by row: measured backends, style keys, reported ones."""
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    measured = [l for l in handles if not l.endswith("(reported)")]
    labels = measured + [l for l, _ in extra] + sorted(l for l in handles if l.endswith("(reported)"))
    handles.update(dict(extra))
    if not labels:
        return
    ncol = min(len(labels), ncol)
    nrow = -(-len(labels) // ncol)
    # matplotlib fills legend columns first: reorder so that the entries read left to right.
    grid = [labels[r * ncol + c] if r * ncol + c < len(labels) else None for c in range(ncol) for r in range(nrow)]
    ordered = [l for l in grid if l is not None]
    # "outside" places the legend below the panels within the constrained layout: never on the data.
    fig.legend([handles[l] for l in ordered], ordered, loc="outside lower center", ncol=ncol, frameon=False)


def draw_lines(rows: pd.DataFrame, spec: dict, title: str, labels: dict):
    x, y, keys = spec["x"], spec.get("y", "tflops"), list(spec.get("panels", []))
    style_key = spec.get("style_by") if spec.get("style_by") in rows else None
    panels, nrows, ncols = panel_grid(keys, rows) if keys else ([()], 1, 1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.5 * ncols, 2.4 * nrows + 1.4), squeeze=False,
                             sharex=True, sharey=spec.get("sharey", False), layout="constrained")
    flat = list(axes.flat)
    ticks = _sorted(rows[x].dropna())
    for ax, values in zip(flat, panels):
        mine = in_panel(rows, keys, values)
        _plot_series(ax, mine, x, y, style_key, labels)
        note = _missing_note(mine, x, ticks, style_key)
        ax.set_title(panel_title(keys, values) + (f"\n({note})" if note else ""),
                     color="#A00000" if note else "black")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [short_number(t) for t in ticks])
        ax.minorticks_off()
        if spec.get("logy"):
            ax.set_yscale("log")
            log_ticks(ax)
        elif y != "median_ms":
            ax.set_ylim(bottom=0)
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    bottom_labels(axes, len(panels), spec.get("xlabel", x), 45 if len(ticks) > 6 else 0)
    for ax in axes[:, 0]:
        ax.set_ylabel(Y_LABELS.get(y, y))
    fig.suptitle(title, fontsize=10)
    extra = [(f"{style_key}={v}", Line2D([], [], color="#555555", linestyle=STYLE_LINES[i % len(STYLE_LINES)],
                                          linewidth=2.0, marker="o", fillstyle=STYLE_FILLS[i % len(STYLE_FILLS)],
                                          markerfacecoloralt="white"))
             for i, v in enumerate(_sorted(rows[style_key]))] if style_key else []
    legend(fig, flat, extra)
    return fig


def case_labels(rows: pd.DataFrame, label_of: list[str], keyed: bool) -> pd.Series:
    """'8192×24576×1536' (M×N×K) or, keyed, 's=8k\\nt=4k' per row."""
    if not label_of:
        return pd.Series("all", index=rows.index)
    if keyed:
        return pd.Series(["\n".join(f"{k}={short_number(v)}" for k, v in zip(label_of, t))
                          for t in rows[label_of].itertuples(index=False)], index=rows.index)
    return pd.Series(["×".join(str(v) for v in t) for t in rows[label_of].itertuples(index=False)], index=rows.index)


def annotated(spec: dict) -> list[str]:
    """The backends whose time over the subject's is written above the bars (`annotate_vs`: one or a list)."""
    versus = spec.get("annotate_vs") or []
    return [versus] if isinstance(versus, str) else list(versus)


def bar_base(values) -> float:
    """A log axis's bars start here: the power of ten below the smallest bar, so that the axis
    holds every bar whole (its base included) instead of cutting them off."""
    positive = [float(v) for v in values if v == v and v > 0]
    return 10.0 ** math.floor(math.log10(min(positive)) - 1e-9) if positive else 1.0


def _ratio_text(times: pd.DataFrame, case: str, subject: str, versus: list[str]) -> str:
    """'1.23×' for one baseline; '6.71× torch' per line for several; '' where a time is missing."""
    lines = []
    for other in versus:
        if case in times.index and {subject, other} <= set(times.columns) \
                and times.loc[case].notna()[[subject, other]].all():
            ratio = times.loc[case, other] / times.loc[case, subject]
            lines.append(f"{ratio:.2f}×" + (f" {other}" if len(versus) > 1 else ""))
    return "\n".join(lines)


def _bar_panel(ax, mine: pd.DataFrame, cases: list[str], y: str, spec: dict, labels: dict) -> None:
    backends = [(b, False) for b in style.order(mine.loc[mine["status"] == "ok", "backend"])]
    backends += [(b, True) for b in style.order(mine.loc[mine["status"] == "reported", "backend"])]
    width = 0.8 / max(1, len(backends))
    base = bar_base(mine[y]) if spec.get("logy") else 0.0
    tops: dict[str, float] = {}
    for i, (backend, reported) in enumerate(backends):
        sel = mine[(mine["backend"] == backend) & ((mine["status"] == "reported") == reported)]
        heights = sel.groupby("_label")[y].median()
        xs = [j + (i - (len(backends) - 1) / 2) * width for j, c in enumerate(cases) if c in heights]
        kw = style.line_style(backend, reported, labels.get(backend))
        ax.bar(xs, [heights[c] - base for c in cases if c in heights], width * 0.92, bottom=base, label=kw["label"],
               color="white" if reported else kw["color"], edgecolor=kw["color"],
               linestyle="--" if reported else "-", linewidth=1.0)
        for c in heights.index:
            tops[c] = max(tops.get(c, 0.0), float(heights[c]))
    versus = annotated(spec)
    if versus:
        ok = mine[mine["status"] == "ok"]
        times = ok.pivot_table(index="_label", columns="backend", values="median_ms", aggfunc="median")
        subject = spec.get("subject", "tilelang")
        for j, c in enumerate(cases):
            if (text := _ratio_text(times, c, subject, versus)):
                ax.annotate(text, (j, tops.get(c, 0.0)), xytext=(0, 3), textcoords="offset points",
                            ha="center", va="bottom", fontsize=7.5)
    if spec.get("logy"):
        ax.set_yscale("log")
        top = max(tops.values(), default=base * 10)
        ax.set_ylim(base, top * (2.5 * len(versus) if versus else 1.5))  # the bars' base; room above
        log_ticks(ax)
    else:
        ax.set_ylim(0, ax.get_ylim()[1] * (1.1 + 0.1 * max(0, len(versus) - 1)))


def draw_bars(rows: pd.DataFrame, spec: dict, params: list[str], title: str, labels: dict):
    """Grouped bars: one group per case, one bar per backend; `annotate_vs` writes the speedup above."""
    y, keys = spec.get("y", "tflops"), list(spec.get("panels", []))
    panels, _, _ = panel_grid(keys, rows) if keys else ([()], 1, 1)
    shown = rows[rows["status"].isin(["ok", "reported"])].dropna(subset=[y]).copy()
    label_of = spec.get("label") or [p for p in params if p not in keys and p in rows
                                     and rows[p].astype(str).nunique() > 1]
    shown["_label"] = case_labels(shown, label_of, spec.get("keyed_labels", False))
    per_panel = []
    for values in panels:
        mine = in_panel(shown, keys, values)
        per_panel.append((values, mine, list(dict.fromkeys(sort_rows(mine, label_of)["_label"]))
                          if label_of else ["all"]))
    counts = [max(2, len(c)) for _, _, c in per_panel]  # a one-case panel still has room for its labels
    if spec.get("panel_layout") == "row":
        fig, axes = plt.subplots(1, len(panels), figsize=(max(5.0, 1.0 * sum(counts) + 2.4), 3.9), squeeze=False,
                                 layout="constrained", gridspec_kw={"width_ratios": counts})
        flat = list(axes[0])
    else:
        fig, axes = plt.subplots(len(panels), 1, figsize=(max(5.0, 0.8 * max(counts) + 2.0), 2.8 * len(panels) + 1.4),
                                 squeeze=False, layout="constrained")
        flat = list(axes[:, 0])
    for ax, (values, mine, cases), count in zip(flat, per_panel, counts):
        _bar_panel(ax, mine, cases, y, spec, labels)
        pad = (count - len(cases)) / 2 if spec.get("panel_layout") == "row" else 0.0
        ax.set_xlim(-0.6 - pad, len(cases) - 0.4 + pad)  # bars as wide as in the wider panels
        tilt = not spec.get("keyed_labels") and (len(cases) > 4 or max(map(len, cases), default=0) > 9)
        ax.set_xticks(range(len(cases)), cases, rotation=25 if tilt else 0, ha="right" if tilt else "center",
                      rotation_mode="anchor")
        ax.set_title(panel_title(keys, values) or None)
        ax.grid(axis="x", visible=False)
    flat[0].set_ylabel(Y_LABELS.get(y, y) + (" (log scale)" if spec.get("logy") else ""))
    if spec.get("panel_layout") != "row":
        for ax in flat[1:]:
            ax.set_ylabel(Y_LABELS.get(y, y))
    for ax in (flat if spec.get("panel_layout") == "row" else flat[-1:]):
        ax.set_xlabel(spec.get("xlabel", "×".join(label_of) or "case"))
    if annotated(spec):
        subject = spec.get("subject", "tilelang")
        title += (f"\nnumbers above the bars: {' and '.join(annotated(spec))}'s time / {subject}'s "
                  f"time (above 1: {subject} faster)")
    fig.suptitle(title, fontsize=10)
    legend(fig, flat)
    return fig
