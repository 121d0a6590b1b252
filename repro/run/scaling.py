"""The same FlashAttention + GEMM sweep on 1 GPU and on N GPUs of one node: wall time and content.

    python -m repro.run.scaling --gpus 2 [--quick] [--out results/<hardware>/scaling.csv]

Each run is one Hydra multirun (joblib launcher, `shard=i/g` over g GPUs) into its own results
folder, with fresh TileLang, Triton and schedule caches so that neither run inherits the
other's compiled kernels. The runs must agree in content: the same (case, backend) rows with
the same statuses. Rows go to results/<hardware>/scaling.csv: gpus, wall_s, cases, rows, speedup, ...
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from repro.measure.devices import visible_gpus
from repro.results.store import atomic_write_csv, read_results

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ("gemm", "flash_attention")
# The overrides of each experiment's part of the sweep (one multirun per experiment, timed together).
_FA = ["dtype=bf16", "gqa.heads=[]", "extra_cases=[]", "mla.seqlens=[]", "varlen.lengths=[]"]
SUBSETS = {
    "default": {"gemm": ["dtype=bf16", "shapes=[[2048,2048,2048],[4096,4096,4096],[8192,8192,8192],"
                         "[8192,10240,8192],[8192,1536,7168],[8192,7168,2048]]"],
                "flash_attention": [*_FA, "seqlens=[1024,4096,8192]", "head_dims=[64,128]"]},
    "quick": {"gemm": ["dtype=bf16", "bench=quick", "shapes=[[4096,4096,4096],[8192,8192,8192]]"],
              "flash_attention": [*_FA, "bench=quick", "seqlens=[1024,4096]", "head_dims=[128]"]},
}


def sweep_commands(gpus: int, results: Path, sweep_dir: Path, subset: str, extra: list[str]) -> list[list[str]]:
    """One Hydra multirun per experiment, each over `gpus` shards with one joblib worker per GPU."""
    shards = ",".join(f"{i}/{gpus}" for i in range(gpus))
    return [[sys.executable, str(ROOT / "run.py"), "-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={gpus}",
             f"experiment={name}", f"shard={shards}", f"results_dir={results}",
             f"hydra.sweep.dir={sweep_dir}/{name}", *SUBSETS[subset][name], *extra] for name in EXPERIMENTS]


def run_sweep(gpus: int, tokens: list[str], work: Path, subset: str, extra: list[str]) -> tuple[float, Path]:
    """One timed sweep on the first `gpus` GPUs, with caches of its own; returns (wall_s, results)."""
    results, caches = work / f"gpus{gpus}", work / f"cache{gpus}"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(tokens[:gpus]), "REPRO_CACHE": str(caches / "knobs"),
           "TILELANG_CACHE_DIR": str(caches / "tilelang"), "TRITON_CACHE_DIR": str(caches / "triton"),
           "REPRO_GPU_LOCKS": str(work / "locks")}
    start = time.perf_counter()
    for cmd in sweep_commands(gpus, results, work / f"multirun{gpus}", subset, extra):
        print(f"[scaling] {gpus} GPU(s): {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    return time.perf_counter() - start, results


def measured_rows(results: Path) -> pd.DataFrame:
    """(experiment, case, backend, status) of every measured row under one results folder."""
    frames = [read_results(p)[["experiment", "case", "backend", "status"]] for p in sorted(results.glob("*/*.csv"))]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["experiment", "case",
                                                                                     "backend", "status"])
    rows = rows[rows["status"] != "reported"]
    return rows.sort_values(["experiment", "case", "backend"], kind="mergesort").reset_index(drop=True)


def differences(one: pd.DataFrame, many: pd.DataFrame) -> list[str]:
    """How two sweeps' contents differ: missing or extra (case, backend) rows, changed statuses."""
    key = ["experiment", "case", "backend"]
    both = one.merge(many, on=key, how="outer", suffixes=("_1", "_n"), indicator=True)
    out = [f"only with 1 GPU: {r.experiment} {r.case} {r.backend}"
           for r in both[both._merge == "left_only"].itertuples()]
    out += [f"only with N GPUs: {r.experiment} {r.case} {r.backend}"
            for r in both[both._merge == "right_only"].itertuples()]
    changed = both[(both._merge == "both") & (both.status_1 != both.status_n)]
    return out + [f"status {r.status_1} -> {r.status_n}: {r.experiment} {r.case} {r.backend}"
                  for r in changed.itertuples()]


def record(out: Path, runs: list[dict]) -> None:
    """Replace this node's earlier rows for the same GPU counts; keep the others."""
    new = pd.DataFrame(runs)
    if out.exists():
        old = pd.read_csv(out)
        if "subset" not in old:
            old["subset"] = "default"
        same = old.set_index(["subset", "gpus"]).index.isin(new.set_index(["subset", "gpus"]).index)
        new = pd.concat([old[~same], new], ignore_index=True)
    atomic_write_csv(new.sort_values(["subset", "gpus"], kind="mergesort"), out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.run.scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=2, help="the N of the N-GPU run (default 2)")
    parser.add_argument("--quick", action="store_true", help="a small subset (smoke check, minutes)")
    parser.add_argument("--out", help="default: results/<hardware>/scaling.csv")
    parser.add_argument("--work", help="keep the sweeps' results here (default: a temporary folder)")
    parser.add_argument("extra", nargs="*", help="further overrides for both sweeps, e.g. bench.isolate=auto")
    args = parser.parse_args(argv)
    tokens = visible_gpus()
    if args.gpus < 2 or len(tokens) < args.gpus:
        print(f"error: --gpus {args.gpus}: need 2 <= N <= {len(tokens)} (the GPUs visible)", file=sys.stderr)
        return 2
    subset = "quick" if args.quick else "default"
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        work = Path(args.work or tmp)
        wall1, res1 = run_sweep(1, tokens, work, subset, args.extra)
        walln, resn = run_sweep(args.gpus, tokens, work, subset, args.extra)
        one, many = measured_rows(res1), measured_rows(resn)
        diff = differences(one, many)
        hardware = ",".join(sorted({p.parent.name for p in res1.glob("*/*.csv")}))
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    common = {"subset": subset, "experiments": "+".join(EXPERIMENTS), "hardware": hardware, "timestamp": stamp}
    runs = [{"gpus": 1, "wall_s": round(wall1, 1), "cases": one[["experiment", "case"]].drop_duplicates().shape[0],
             "rows": len(one), "speedup": 1.0, "identical": True, **common},
            {"gpus": args.gpus, "wall_s": round(walln, 1),
             "cases": many[["experiment", "case"]].drop_duplicates().shape[0], "rows": len(many),
             "speedup": round(wall1 / walln, 2), "identical": not diff, **common}]
    out = Path(args.out or ROOT / "results" / hardware.split(",")[0] / "scaling.csv")
    record(out, runs)
    print(f"[scaling] 1 GPU {wall1:.1f} s, {args.gpus} GPUs {walln:.1f} s: {wall1 / walln:.2f}x; "
          f"{len(one)} rows, content {'identical' if not diff else 'DIFFERS'}; written to {out}")
    for line in diff[:20]:
        print(f"  {line}")
    return 0 if not diff else 1


if __name__ == "__main__":
    sys.exit(main())
