"""The environment appendix, and the hardware/date labels that captions take from the manifests."""
from __future__ import annotations

import re
from pathlib import Path

from repro.report.load import Results
from repro.report.render import latex_escape, latex_table, markdown_table, relative, write
from repro.results.store import Status

# Manifest fields shown first (when present, by any of these flattened names); the rest follow sorted.
KNOWN_FIELDS = [
    ("GPU", r"^(gpu|gpu(\.|_)?name|device(\.|_)?name|gpus?\.0\.name)$"),
    ("GPU count", r"^(gpu(\.|_)?count|num_gpus|device_count|gpus?\.count)$"),
    ("Driver", r"driver"),
    ("CUDA / ROCm", r"(^|\.)(cuda|cuda_version|rocm|hip)$"),
    ("Python", r"(^|\.)python(_version)?$"),
    ("torch", r"(^|\.)torch(_version)?$"),
    ("triton", r"(^|\.)triton(_version)?$"),
    ("tilelang", r"(^|\.)tilelang(_version)?$"),
    ("Clocks", r"clock"),
    ("Commit", r"(^|\.)(git_)?commit$"),
    ("Dirty tree", r"dirty"),
    ("Timestamp", r"(^|\.)(timestamp|started(_at)?|date|time)$"),
]


def flatten(value, prefix: str = "") -> dict[str, str]:
    """Nested manifest -> {"a.b": "text"}; lists are indexed."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: "not recorded" if value is None else str(value)}
    flat: dict[str, str] = {}
    for key, item in items:
        if str(key).startswith("_"):
            continue
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def field(manifest: dict, label: str) -> str:
    """The value(s) of one known field; several matching keys (e.g. clocks) are listed by name."""
    pattern = dict(KNOWN_FIELDS)[label]
    flat = flatten(manifest)
    keys = [k for k in sorted(flat) if re.search(pattern, k, re.IGNORECASE)]
    if len(keys) == 1:
        return flat[keys[0]]
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={flat[k]}" for k in keys)


def run_dates(results: Results, hardware: str) -> list[str]:
    """The YYYY-MM-DD dates of the runs on one hardware, from their manifests (never the clock)."""
    dates = set()
    for (hw, _), manifest in results.manifests.items():
        found = re.search(r"\d{4}-\d{2}-\d{2}", field(manifest, "Timestamp")) if hw == hardware else None
        if found:
            dates.add(found.group(0))
    return sorted(dates)


def hardware_label(results: Results, hardware: str) -> str:
    """'h100 (NVIDIA H100 80GB HBM3), runs of 2026-11-25' for captions and titles."""
    names = sorted({field(m, "GPU") for (hw, _), m in results.manifests.items() if hw == hardware} - {""})
    dates = run_dates(results, hardware)
    text = hardware + (f" ({', '.join(names)})" if names else "")
    if dates:
        text += ", runs of " + (dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}")
    else:
        text += ", run date unknown (no manifest)"
    return text


def measured_by_run(results: Results, hardware: str, run_id: str) -> str:
    """'gemm: cublas, tilelang, triton; ...': the backends with ok rows in one run, per experiment."""
    parts = []
    for name in sorted(results.experiments):
        rows = results.rows(name, hardware)
        mine = rows[(rows["run_id"] == run_id) & (rows["status"] == Status.OK)] if not rows.empty else rows
        if not mine.empty:
            parts.append(f"{name}: {', '.join(sorted(set(mine['backend'])))}")
    return "; ".join(parts) or "none"


def caveats(results: Results) -> list[str]:
    """What a manifest cannot vouch for, said once under the table."""
    notes = []
    for (hw, run), manifest in sorted(results.manifests.items()):
        commit = field(manifest, "Commit")
        if commit in ("", "not recorded"):
            notes.append(f"{hw} / {run}: no git commit recorded, so its dirty flag cannot say which code ran; "
                         "each result row's `code_hash` identifies the sources it measured.")
        elif field(manifest, "Dirty tree").lower() == "true":
            notes.append(f"{hw} / {run}: the tree had uncommitted changes at commit {commit[:10]}.")
    if any(re.search(r"clock_sm_mhz", k) for m in results.manifests.values() for k in flatten(m)):
        notes.append("Clocks are read when the manifest is written, between measurements; an idle SM clock "
                     "there says nothing about the clock under load.")
    notes.append("A package version that reads `not recorded` was not found by the manifest (e.g. a backend "
                 "built from source without package metadata); the `measured backends` row shows what ran.")
    return notes


def appendix_rows(results: Results) -> tuple[list[str], list[list[str]]]:
    """One column per run (hardware / run id), one row per field: the known ones first."""
    runs = sorted(results.manifests)
    header = ["Field"] + [f"{hw} / {run}" for hw, run in runs]
    flats = [flatten(results.manifests[r]) for r in runs]
    rows = [[label] + [field(results.manifests[r], label) for r in runs] for label, _ in KNOWN_FIELDS]
    rows = [row for row in rows if any(row[1:])]
    rows.append(["measured backends"] + [measured_by_run(results, hw, run) for hw, run in runs])
    shown = {k for flat in flats for k in flat if any(re.search(p, k, re.I) for _, p in KNOWN_FIELDS)}
    for key in sorted({k for flat in flats for k in flat} - shown):
        rows.append([key] + [flat.get(key, "") for flat in flats])
    return header, rows


TIMING_NOTE = ("From each run's manifest: the wall time of the whole run, the schedule search within it, and "
               "the time spent in whole cases run in a child process (compile, inputs, gate and timing together).")
TIMING_HEADER = ["Hardware", "Run", "What ran", "Cases", "Wall (s)", "Search (s)", "Cases in a child (s)", "Date"]


def _seconds(value) -> str:
    return f"{float(value):.0f}" if isinstance(value, (int, float)) else ""


def timing_rows(results: Results) -> list[list[str]]:
    """How long each recorded run took, from its manifest: a sweep's wall time, its schedule
    search and its cases run in a child process; a quick run's wall time and its kernels' cases.
    Runs whose manifests carry no timing (older ones, a run cut before its end) are left out."""
    rows = []
    for (hw, run), m in sorted(results.manifests.items()):
        date = str(m.get("timestamp", ""))[:10]
        if isinstance(m.get("sweep"), dict):
            sw = m["sweep"]
            rows.append([hw, run, f"sweep: {sw.get('experiment', '')}", str(sw.get("cases", "")),
                         _seconds(sw.get("wall_s")), _seconds(sw.get("search_s")), _seconds(sw.get("isolated_s")), date])
        if isinstance(m.get("quick"), dict):
            q, kernels = m["quick"], m["quick"].get("kernels") or {}
            timed = sum(float(k.get("isolated_s", 0)) for k in kernels.values() if isinstance(k, dict))
            rows.append([hw, run, "quick: " + ", ".join(sorted(kernels)), str(q.get("cases", "")),
                         _seconds(q.get("wall_s")), "", _seconds(timed) if kernels else "", date])
    return rows


def write_environment(results: Results, out: Path) -> list[Path]:
    header, rows = appendix_rows(results)
    timing = timing_rows(results)
    intro = ("Every run writes a manifest next to its results (`results/<hardware>/env-<run_id>.json`). "
             "This appendix lists them field by field.")
    if not results.manifests:
        md = "# Environment\n\nNo run manifests under results/ yet: nothing has been measured.\n"
        tex = "No run manifests under \\texttt{results/} yet: nothing has been measured.\n"
    else:
        links = "\n".join(f"- [{m['_path']}]({relative(m['_path'], results.root.parent, out)})"
                          for _, m in sorted(results.manifests.items()))
        notes = caveats(results)
        md = (f"# Environment\n\n{intro}\n\n{markdown_table(header, rows)}\n\n"
              + "\n".join(f"- {n}" for n in notes) + f"\n\nManifests:\n\n{links}\n")
        if timing:
            md += f"\n## Time per run\n\n{TIMING_NOTE}\n\n{markdown_table(TIMING_HEADER, timing)}\n"
        tex = latex_escape(intro) + "\n\n" + latex_table(header, rows, "Run manifests.", "tab:environment",
                                                       wrap_first=False)
        tex += "\n\\begin{itemize}\n" + "".join(f"\\item {latex_escape(n)}\n" for n in notes) + "\\end{itemize}\n"
        if timing:
            tex += "\n" + latex_escape(TIMING_NOTE) + "\n\n" + latex_table(TIMING_HEADER, timing, "Time per run.",
                                                                       "tab:run-times", wrap_first=False)
    return [write(out / "environment.md", md), write(out / "environment.tex", tex)]
