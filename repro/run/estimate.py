"""How long a sweep will take, from the sweep times earlier runs recorded in their manifests.

    python -m repro.run.estimate [--results results] [--hardware h200] [--budget 600] gemm flash_attention ...

Each run's manifest (`results/<hardware>/env-<run>.json`) records its `sweep`: wall time, rows,
and where the time went (search, gate, timing). The estimate per experiment is its most recent
record; a resumed run recorded only what it measured, so each line names its run and row count.
A run stopped by its time budget (`time_budget_s`) also recorded the runs it left: its estimate
is the time those take at the rate it measured. `--budget` says how many runs of that many
seconds (`make measure BUDGET=...`) the total takes.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from repro.results.manifest import read_manifests


def latest_sweeps(root: Path, hardware: str | None) -> dict[tuple[str, str], dict]:
    """(hardware, experiment) -> the newest recorded sweep (with its run's timestamp)."""
    found: dict[tuple[str, str], dict] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        if hardware and folder.name != hardware:
            continue
        for manifest in read_manifests(folder).values():
            sweep = manifest.get("sweep")
            if not isinstance(sweep, dict) or "experiment" not in sweep:
                continue
            key = (folder.name, str(sweep["experiment"]))
            stamp = str(manifest.get("timestamp", ""))
            if key not in found or stamp > found[key]["timestamp"]:
                found[key] = {**sweep, "timestamp": stamp}
    return found


def estimate_lines(root: Path, experiments: list[str], hardware: str | None,
                   budget: float | None = None) -> list[str]:
    sweeps = latest_sweeps(root, hardware)
    lines, total, known = [], 0.0, 0
    for name in experiments:
        mine = sorted((v for (hw, e), v in sweeps.items() if e == name), key=lambda v: v["timestamp"])
        if not mine:
            lines.append(f"  {name}: no earlier sweep recorded")
            continue
        last = mine[-1]
        wall, rows, left = float(last["wall_s"]), int(last["rows"]), int(last.get("runs_left") or 0)
        if left:  # stopped on its budget: what is left, at the rate that run measured
            seconds = wall / max(rows, 1) * left
            lines.append(f"  {name}: about {seconds / 60:.1f} min left ({left} runs left when the run of "
                         f"{last['timestamp'][:10]} spent its {float(last['budget_s']):g} s budget after {rows} rows)")
        else:
            seconds = wall
            lines.append(f"  {name}: about {wall / 60:.1f} min ({rows} rows, run of {last['timestamp'][:10]})")
        total, known = total + seconds, known + 1
    head = (f"estimate: about {total / 60:.0f} min for {known} of {len(experiments)} experiments, from the "
            "last recorded sweeps (a cold compile cache adds to it; a resumed run takes less)") if known else \
        "estimate: no sweep time recorded yet for these experiments"
    if known and budget:
        head += (f"; in runs of {budget:g} s: about {max(1, math.ceil(total / budget))} (each may overrun by its "
                 "last case; the same command resumes)")
    return [head, *lines]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.run.estimate", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--hardware", help="a results/<hardware> folder (default: every one)")
    parser.add_argument("--budget", type=float, help="seconds a run may take (make measure BUDGET=...)")
    parser.add_argument("experiments", nargs="+")
    args = parser.parse_args(argv)
    try:
        print("\n".join(estimate_lines(Path(args.results), args.experiments, args.hardware, args.budget)))
    except Exception as exc:  # an estimate never stops a sweep
        print(f"estimate: not available ({type(exc).__name__}: {exc})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
