"""The CPU-side results: code size vs speed (loc.csv), portability builds, multi-GPU scaling."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from repro.report import style
from repro.report.environment import hardware_label
from repro.report.figures import Figure
from repro.report.load import Results
from repro.report.render import latex_table, markdown_table, write

OPERATOR_MARKERS = {"flash_attention": "o", "mla_decode": "s", "gemm": "D", "sparse_mla": "^",
                    "dsa_indexer": "v", "dsa_topk": "P"}


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


def loc_with_speed(results: Results, config: dict, hardware: str) -> pd.DataFrame:
    """loc.csv rows of counted implementations with the best measured TFLOPS of their backend."""
    loc = results.side["loc"].copy()
    loc["code_lines"] = pd.to_numeric(loc.get("code_lines"), errors="coerce")
    spec = config.get("loc", {})
    to_exp = spec.get("operator_experiment", {})
    best = []
    for _, row in loc.iterrows():
        backend = loc_backend(row, spec.get("backend_rules", []))
        rows = results.rows(to_exp.get(str(row.get("operator")), str(row.get("operator"))), hardware)
        ok = rows[(rows["status"] == "ok") & (rows["backend"] == backend)] if backend and not rows.empty else rows
        best.append(ok["tflops"].max() if backend and not ok.empty else float("nan"))
    loc["best_tflops"] = best
    return loc.sort_values(["operator", "code_lines", "implementation"], kind="mergesort")


def loc_figure(results: Results, config: dict, hardware: str, out: Path) -> Figure | None:
    data = loc_with_speed(results, config, hardware).dropna(subset=["code_lines", "best_tflops"])
    if data.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.8, 4.4), layout="constrained")
    for i, (_, row) in enumerate(data.iterrows()):
        backend = loc_backend(row, config.get("loc", {}).get("backend_rules", [])) or "other"
        ax.scatter(row["code_lines"], row["best_tflops"], s=46, color=style.color(backend),
                   marker=OPERATOR_MARKERS.get(str(row["operator"]), "o"), zorder=3)
        ax.annotate(str(row["implementation"]), (row["code_lines"], row["best_tflops"]), fontsize=7,
                    xytext=(6, 6 if i % 2 == 0 else -10), textcoords="offset points")
    for op, mark in sorted(OPERATOR_MARKERS.items()):
        if op in set(data["operator"].astype(str)):
            ax.scatter([], [], marker=mark, color="#777777", label=op)
    ax.set_xscale("log")
    # Room on the right for the labels of the largest implementations.
    ax.set_xlim(data["code_lines"].min() / 1.5, data["code_lines"].max() * 4)
    ax.set_xlabel("code lines (log scale; no blanks, comments, docstrings)")
    ax.set_ylabel("best measured throughput (TFLOPS)")
    ax.set_ylim(bottom=0)
    ax.legend(title="operator (marker); colour = backend", fontsize=7.5, title_fontsize=7.5, frameon=False)
    label = hardware_label(results, hardware)
    ax.set_title(f"Code size vs speed\n{label}")
    stem = out / f"loc-{hardware}"
    style.save(fig, stem)
    return Figure("loc", hardware, stem, f"Code lines vs best measured TFLOPS per implementation on {label}.", True)


def scaling_figure(results: Results, out: Path) -> Figure | None:
    table = results.side.get("scaling")
    if table is None or not {"gpus", "wall_s"} <= set(table.columns):
        return None
    data = table.groupby("gpus", sort=True)["wall_s"].min()
    fig, ax = plt.subplots(figsize=(4.2, 3.0), layout="constrained")
    ax.bar([str(g) for g in data.index], data.values, color=style.color("tilelang"))
    for i, (gpus, wall) in enumerate(data.items()):
        ax.annotate(f"{data.iloc[0] / wall:.2f}x", (i, wall), ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("GPUs of one node")
    ax.set_ylabel("sweep wall time (s)")
    ax.set_title("Sweep wall time vs GPUs (speedup over 1 GPU)")
    stem = out / "scaling"
    style.save(fig, stem)
    return Figure("scaling", "", stem, "Wall time of the same sweep on 1 and more GPUs of one node.")


def _frame_table(frame: pd.DataFrame, columns: list[str]) -> tuple[list[str], list[list[str]]]:
    cols = [c for c in columns if c in frame]
    body = [["–" if v != v else (f"{v:.0f}" if isinstance(v, float) else str(v)) for v in r]
            for r in frame[cols].itertuples(index=False)]
    return cols, body


def write_side_tables(results: Results, config: dict, out: Path) -> list[Path]:
    """paper/tables/loc, portability, scaling (.md and .tex) for those present."""
    written = []
    hardware = results.hardware
    if "loc" in results.side:
        frame = loc_with_speed(results, config, hardware[0]) if hardware else results.side["loc"]
        cols = ["operator", "implementation", "language", "function", "code_lines", "total_lines",
                "commit", "status", "best_tflops"]
        frame = frame.assign(commit=frame.get("commit", pd.Series("", index=frame.index)).astype(str).str[:10])
        header, body = _frame_table(frame, cols)
        note = f"best_tflops: best measured on {hardware[0]}." if hardware else "No measured results yet."
        align = "".join("p{0.17\\linewidth}" if c == "implementation" else "r" if c.endswith(("lines", "tflops"))
                        else "l" for c in header)
        written += _write_pair(out, "loc", "Code size", header, body, note, align)
    if "portability" in results.side:
        table = results.side["portability"].sort_values(["kernel", "target"], kind="mergesort")
        header, body = _frame_table(table, ["kernel", "target", "status", "reason", "seconds"])
        align = "".join("p{0.4\\linewidth}" if c == "reason" else "r" if c == "seconds" else "l" for c in header)
        written += _write_pair(out, "portability", "Portability: builds per target", header, body, "", align)
    if "scaling" in results.side:
        table = results.side["scaling"].sort_values(["gpus"], kind="mergesort")
        header, body = _frame_table(table, [c for c in table.columns if c != "csv"])
        written += _write_pair(out, "scaling", "Scaling over GPUs", header, body, "")
    return written


def _write_pair(out: Path, name: str, title: str, header, body, note: str, align: str | None = None) -> list[Path]:
    md = f"# {title}\n\n{note}\n\n{markdown_table(header, body)}\n\nSource: `results/{name}.csv`\n"
    tex = latex_table(header, body, f"{title}. {note}", f"tab:{name}", align=align)
    return [write(out / f"{name}.md", md), write(out / f"{name}.tex", tex)]
