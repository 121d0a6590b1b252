"""What fault isolation costs: the same sweep in-process and with every measurement in a child.

    python -m repro.run.isolation [--quick] [--out results/<hardware>/isolation.csv] [overrides ...]

Runs the scaling check's GEMM + FlashAttention subset twice on one GPU, `bench.isolate=false`
then `bench.isolate=true`, each into its own results folder with the same warm compile caches
(the second run must not pay for compiles the first one did; the first run is preceded by a
warm-up sweep that fills them). Records per mode the wall time, rows and statuses, the overhead
per case, and how far the isolated medians sit from the in-process ones (they must agree: the
child times the same kernel with the same timer).
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from repro.results.store import atomic_write_csv, read_results
from repro.run.scaling import EXPERIMENTS, ROOT, SUBSETS, differences, measured_rows

MODES = ("false", "true")


def sweep(results: Path, caches: Path, subset: str, isolate: str, extra: list[str]) -> float:
    """One single-GPU run of each experiment; returns their wall time in seconds."""
    env = {**os.environ, "REPRO_CACHE": str(caches / "knobs"), "TILELANG_CACHE_DIR": str(caches / "tilelang"),
           "TRITON_CACHE_DIR": str(caches / "triton")}
    start = time.perf_counter()
    for name in EXPERIMENTS:
        cmd = [sys.executable, str(ROOT / "run.py"), f"experiment={name}", f"results_dir={results}",
               f"bench.isolate={isolate}", *SUBSETS[subset][name], *extra]
        print(f"[isolation] bench.isolate={isolate}: {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    return time.perf_counter() - start


def medians(results: Path) -> pd.DataFrame:
    frames = [read_results(p) for p in sorted(results.glob("*/*.csv"))]
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[rows["status"] == "ok"]
    return rows.set_index(["experiment", "case", "backend"])["median_ms"].astype(float)


def summarise(walls: dict, folders: dict, subset: str) -> list[dict]:
    base_rows = measured_rows(folders["false"])
    cases = base_rows[["experiment", "case"]].drop_duplicates().shape[0]
    ref = medians(folders["false"])
    out = []
    for mode in MODES:
        rows = measured_rows(folders[mode])
        shift = (medians(folders[mode]) / ref).dropna()
        logs = shift.map(math.log)
        out.append({"subset": subset, "isolate": mode, "wall_s": round(walls[mode], 1), "cases": cases,
                    "rows": len(rows), "overhead_s_per_case": round((walls[mode] - walls["false"]) / max(cases, 1), 2),
                    "median_shift_geomean": round(math.exp(logs.mean()), 4) if len(logs) else float("nan"),
                    "median_shift_max": round(float(shift.max()), 4) if len(shift) else float("nan"),
                    "same_statuses": not differences(base_rows, rows),
                    "hardware": ",".join(sorted({p.parent.name for p in folders[mode].glob("*/*.csv")}))})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.run.isolation", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the scaling check's small subset")
    parser.add_argument("--out", help="default: results/<hardware>/isolation.csv")
    parser.add_argument("--work", help="keep the sweeps' results here (default: a temporary folder)")
    parser.add_argument("extra", nargs="*", help="further overrides for every sweep")
    args = parser.parse_args(argv)
    subset = "quick" if args.quick else "default"
    with tempfile.TemporaryDirectory(prefix="isolation-") as tmp:
        work = Path(args.work or tmp)
        caches = work / "caches"
        sweep(work / "warmup", caches, subset, "false", args.extra)  # fills the compile caches
        walls, folders = {}, {}
        for mode in MODES:
            folders[mode] = work / f"isolate-{mode}"
            walls[mode] = sweep(folders[mode], caches, subset, mode, args.extra)
        rows = summarise(walls, folders, subset)
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    rows = [{**r, "timestamp": stamp} for r in rows]
    out = Path(args.out or ROOT / "results" / rows[0]["hardware"].split(",")[0] / "isolation.csv")
    atomic_write_csv(pd.DataFrame(rows), out)
    iso = rows[1]
    print(f"[isolation] in-process {rows[0]['wall_s']} s, isolated {iso['wall_s']} s over {iso['cases']} cases: "
          f"{iso['overhead_s_per_case']} s per case; medians x{iso['median_shift_geomean']} (max "
          f"x{iso['median_shift_max']}); statuses {'the same' if iso['same_statuses'] else 'DIFFER'}; {out}")
    return 0 if iso["same_statuses"] else 1


if __name__ == "__main__":
    sys.exit(main())
