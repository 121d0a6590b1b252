"""Code size vs speed: one panel per operator, code lines (log) against the best TFLOPS of each backend.

A counted implementation appears where it maps to a backend (results/loc.csv's `backend` column, else
the report config's rules) with a measured TFLOPS (filled) or only a published one (hollow, dashed edge).
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import FuncFormatter

from repro.report import style
from repro.report.claim_notes import PUBLISHED_SUFFIX, same_card
from repro.report.environment import hardware_label
from repro.report.figures import Figure
from repro.report.load import Results

OFFSETS = [(7, 0, "left", "center"), (-7, 0, "right", "center"), (0, 7, "center", "bottom"),
           (0, -7, "center", "top"), (7, 9, "left", "bottom"), (7, -9, "left", "top"),
           (-7, 9, "right", "bottom"), (-7, -9, "right", "top")]


def loc_backend(row: pd.Series, rules: list[dict]):
    """Which measured backend a counted implementation is: loc.csv's column, else the first matching rule."""
    if "backend" in row.index:  # loc.csv says it itself: an empty cell means "not measured here"
        own = row["backend"]
        return str(own).strip() or None if own == own and own is not None else None
    text = " | ".join(str(row.get(c, "")) for c in ("implementation", "role", "language"))
    for rule in rules:
        if re.search(rule["match"], text):
            return rule.get("backend")
    return None


def _best(results: Results, experiment: str, backend: str, hardware: str) -> tuple[float, bool]:
    """(best TFLOPS, reported?): measured ok rows first, else published rows of that backend on this card."""
    rows = results.rows(experiment, hardware)
    if rows.empty:
        return float("nan"), False
    mine = rows[rows["backend"].isin([backend, f"{backend}{PUBLISHED_SUFFIX}"])]
    # A published figure counts only where its source names this card (never FlashMLA's H800 numbers
    # on an H100 chart).
    here = mine["source"].astype(str).map(lambda s: same_card(s, hardware)).astype(bool)
    mine = mine[(mine["status"] != "reported") | here]
    for status, reported in (("ok", False), ("reported", True)):
        values = mine.loc[mine["status"] == status, "tflops"].dropna()
        if not values.empty:
            return float(values.max()), reported
    return float("nan"), False


def loc_points(results: Results, config: dict, hardware: str) -> pd.DataFrame:
    """One row per counted implementation with a backend: code lines, best TFLOPS, measured or reported."""
    spec, specs = config.get("loc", {}), config.get("experiments", {})
    to_exp = spec.get("operator_experiment", {})
    loc = results.side["loc"].copy()
    loc["code_lines"] = pd.to_numeric(loc.get("code_lines"), errors="coerce")
    points = []
    for _, row in loc.dropna(subset=["code_lines"]).iterrows():
        backend = loc_backend(row, spec.get("backend_rules", []))
        experiment = to_exp.get(str(row.get("operator")), str(row.get("operator")))
        if not backend or specs.get(experiment, {}).get("metric", "tflops") != "tflops":
            continue  # not measured here, or an operator without a FLOP count (top-k)
        value, reported = _best(results, experiment, backend, hardware)
        if value == value:
            points.append({"experiment": experiment, "implementation": str(row["implementation"]),
                           "backend": backend, "code_lines": float(row["code_lines"]), "tflops": value,
                           "reported": reported})
    frame = pd.DataFrame(points, columns=["experiment", "implementation", "backend", "code_lines", "tflops",
                                          "reported"])
    return frame.sort_values(["experiment", "code_lines", "implementation"], kind="mergesort")


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def place_labels(fig, ax, points: pd.DataFrame, labels: list[str]) -> None:
    """Annotate each point where its label overlaps no other label, no point and stays inside the axes."""
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    marks = [ax.transData.transform((x, y)) for x, y in zip(points["code_lines"], points["tflops"])]
    taken = []
    for (x, y), text in zip(zip(points["code_lines"], points["tflops"]), labels):
        best = None
        for dx, dy, ha, va in OFFSETS:
            note = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=7.5)
            note.set_in_layout(False)
            box = note.get_window_extent(renderer)
            cost = sum(_overlap(box, t) for t in taken)
            cost += sum(1e4 for mx, my in marks if box.x0 - 3 < mx < box.x1 + 3 and box.y0 - 3 < my < box.y1 + 3)
            cost += 1e6 * (box.x0 < frame.x0 or box.x1 > frame.x1 or box.y0 < frame.y0 or box.y1 > frame.y1)
            note.remove()
            if best is None or cost < best[0]:
                best = (cost, dx, dy, ha, va, box)
            if cost == 0:
                break
        _, dx, dy, ha, va, box = best
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                    fontsize=7.5).set_in_layout(False)
        taken.append(box)


def loc_figure(results: Results, config: dict, hardware: str, out: Path) -> Figure | None:
    data = loc_points(results, config, hardware)
    if data.empty:
        return None
    listed = list(config.get("experiments", {}))  # the report config's order, then any others
    experiments = sorted(dict.fromkeys(data["experiment"]),
                         key=lambda e: (listed.index(e) if e in listed else len(listed), e))
    ncols = min(3, len(experiments))
    nrows = -(-len(experiments) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.9 * ncols, 3.0 * nrows + 1.3), squeeze=False,
                             sharex=True, layout="constrained")
    flat = list(axes.flat)
    labels = config.get("backend_labels", {})
    low, high = data["code_lines"].min() / 2.0, data["code_lines"].max() * 4.0
    for ax, experiment in zip(flat, experiments):
        mine = data[data["experiment"] == experiment]
        for _, p in mine.iterrows():
            kw = style.line_style(p["backend"], bool(p["reported"]), labels.get(p["backend"]))
            ax.plot([p["code_lines"]], [p["tflops"]], linestyle="none", marker=kw["marker"], markersize=8,
                    color=kw["color"], markerfacecolor=kw["markerfacecolor"], markeredgecolor=kw["color"],
                    markeredgewidth=1.6, label=kw["label"], zorder=3)
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_ylim(0, max(100.0, mine["tflops"].max() * 1.25))
        ax.set_title(config.get("experiments", {}).get(experiment, {}).get("title", experiment))
        ax.minorticks_off()
    for ax in flat[len(experiments):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("best TFLOPS")
    from repro.report.plots import bottom_labels, legend

    bottom_labels(axes, len(experiments), "kernel code lines (log scale)")
    label = hardware_label(results, hardware)
    fig.suptitle(f"Code size vs speed, per operator\n{label}", fontsize=10)
    legend(fig, flat, ncol=4)
    fig.canvas.draw()  # settle the layout before measuring label boxes
    for ax, experiment in zip(flat, experiments):
        mine = data[data["experiment"] == experiment]
        place_labels(fig, ax, mine, [textwrap.fill(t.replace(" (this project)", " (ours)"), 26)
                                     for t in mine["implementation"]])
    stem = out / f"loc-{hardware}"
    style.save(fig, stem)
    caption = (f"Kernel code lines (results/loc.csv: no blanks, comments or docstrings; host-side glue excluded) "
               f"vs best TFLOPS of the same backend on {label}, one panel per operator: "
               "filled = measured here, hollow = only published numbers (the backend was not run here). "
               "Counted implementations that match no backend run here are listed in tables/loc.md only; "
               "operators without a FLOP count (top-k) are left out.")
    return Figure("loc", hardware, stem, caption, True)
