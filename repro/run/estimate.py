"""How long a sweep will take, from the sweep times earlier runs recorded in their manifests.

    python -m repro.run.estimate [--results results] [--hardware h200] gemm flash_attention ...

Each run's manifest (`results/<hardware>/env-<run>.json`) records its `sweep`: wall time, rows,
and where the time went (search, gate, timing). The estimate per experiment is its most recent
record; a resumed run recorded only what it measured, so each line names its run and row count.
"""
from __future__ import annotations

import argparse
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


def estimate_lines(root: Path, experiments: list[str], hardware: str | None) -> list[str]:
    sweeps = latest_sweeps(root, hardware)
    lines, total, known = [], 0.0, 0
    for name in experiments:
        mine = sorted((v for (hw, e), v in sweeps.items() if e == name), key=lambda v: v["timestamp"])
        if not mine:
            lines.append(f"  {name}: no earlier sweep recorded")
            continue
        last = mine[-1]
        total, known = total + float(last["wall_s"]), known + 1
        lines.append(f"  {name}: about {float(last['wall_s']) / 60:.1f} min ({last['rows']} rows, run of "
                     f"{last['timestamp'][:10]})")
    head = (f"estimate: about {total / 60:.0f} min for {known} of {len(experiments)} experiments, from the "
            "last recorded sweeps (a cold compile cache adds to it; a resumed run takes less)") if known else \
        "estimate: no sweep time recorded yet for these experiments"
    return [head, *lines]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.run.estimate", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--hardware", help="a results/<hardware> folder (default: every one)")
    parser.add_argument("experiments", nargs="+")
    args = parser.parse_args(argv)
    try:
        print("\n".join(estimate_lines(Path(args.results), args.experiments, args.hardware)))
    except Exception as exc:  # an estimate never stops a sweep
        print(f"estimate: not available ({type(exc).__name__}: {exc})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
