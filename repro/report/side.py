"""The CPU-side results: code size vs speed (loc.csv), portability builds, multi-GPU scaling."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from repro.report import style
from repro.report.figures import Figure
from repro.report.loc_figure import loc_backend
from repro.report.load import Results
from repro.report.render import latex_table, markdown_table, write
from repro.results.store import Status


def loc_with_speed(results: Results, config: dict, hardware: str) -> pd.DataFrame:
    """loc.csv rows with the backend each maps to and that backend's best measured TFLOPS."""
    loc = results.side["loc"].copy()
    loc["code_lines"] = pd.to_numeric(loc.get("code_lines"), errors="coerce")
    spec, specs = config.get("loc", {}), config.get("experiments", {})
    to_exp = spec.get("operator_experiment", {})
    backends, best = [], []
    for _, row in loc.iterrows():
        backend = loc_backend(row, spec.get("backend_rules", []))
        experiment = to_exp.get(str(row.get("operator")), str(row.get("operator")))
        rows = results.rows(experiment, hardware)
        ok = rows[(rows["status"] == Status.OK) & (rows["backend"] == backend)] if backend and not rows.empty else rows
        timed = specs.get(experiment, {}).get("metric", "tflops") == "tflops"
        backends.append(backend or "")
        best.append(ok["tflops"].max() if backend and timed and not ok.empty else float("nan"))
    loc["backend"], loc["best_tflops"] = backends, best
    return loc.sort_values(["operator", "code_lines", "implementation"], kind="mergesort")


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
        cols = ["operator", "implementation", "language", "code_lines", "glue_code_lines", "commit", "status",
                "backend", "best_tflops"]
        frame = frame.assign(commit=frame.get("commit", pd.Series("", index=frame.index)).astype(str).str[:10])
        header, body = _frame_table(frame, cols)
        note = ("code_lines: the kernel's own lines (no blanks, comments, docstrings); glue_code_lines: host-side "
                "code around it, not counted. backend: the measured backend the implementation corresponds to; "
                + (f"best_tflops: its best measured TFLOPS on {hardware[0]} (– where not measured or no FLOP count)."
                   if hardware else "no measured results yet."))
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
    md_align = "".join("r" if a == "r" else "l" for a in _letters(align)) if align else None
    md = f"# {title}\n\n{note}\n\n{markdown_table(header, body, md_align)}\n\nSource: `results/{name}.csv`\n"
    tex = latex_table(header, body, f"{title}. {note}", f"tab:{name}", align=align)
    return [write(out / f"{name}.md", md), write(out / f"{name}.tex", tex)]


def _letters(align: str) -> list[str]:
    """'p{0.2\\linewidth}rl' -> ['p', 'r', 'l']: one letter per column."""
    return [m[0] for m in re.findall(r"p\{[^}]*\}|[lrc]", align)]
