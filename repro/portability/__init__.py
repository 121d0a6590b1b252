"""Portability table (claim C6): every TileLang kernel of kernels/, built for every target.

`run(cfg)` builds each (kernel, target) pair of `cfg.portability` in its own child process with
a time limit (a crash or hang costs one row), a few at a time, and writes one row per pair to
`portability.out` (results/portability.csv), replacing the rows of the pairs it rebuilt. It needs
no GPU: CUDA targets are compiled with nvcc, HIP and Ascend lowered to source where their
compilers (hipcc, bisheng) are absent. `python run.py experiment=portability`.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from repro.measure.experiment import config_section
from repro.portability.child import MARKER

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["kernel", "module", "target", "target_spec", "status", "reason", "seconds", "source_lines",
           "features", "knobs", "tilelang_version", "date"]
STATUSES = ("built", "lowered", "failed", "unsupported")


def settings_of(cfg) -> dict:
    """The `portability` section as plain Python data."""
    return config_section(cfg, "portability")


def plan(settings: dict) -> list[dict]:
    """One job per (kernel, target), kernels in config order; `only_*` narrow the table."""
    from repro.portability.catalog import KERNELS
    from repro.run.validate import ConfigError

    kernels, targets = settings["kernels"], settings["targets"]
    only_k, only_t = settings.get("only_kernels") or list(kernels), settings.get("only_targets") or list(targets)
    for name in [*kernels, *only_k]:
        if name not in KERNELS:
            raise ConfigError(f"portability.kernels: unknown kernel {name!r}; known: {', '.join(KERNELS)}")
    for name in only_k:
        if name not in kernels:
            raise ConfigError(f"portability.only_kernels: {name!r} has no shape under portability.kernels")
    for name in only_t:
        if name not in targets:
            raise ConfigError(f"portability.only_targets: unknown target {name!r}; known: {', '.join(targets)}")
    return [{"kernel": k, "module": KERNELS[k][0], "params": dict(kernels[k] or {}), "target_name": t,
             "target": dict(targets[t]), "keep_dir": settings.get("keep_sources"),
             "fallback": ((settings.get("fallbacks") or {}).get(t) or {}).get(k)}
            for k in kernels if k in only_k for t in targets if t in only_t]


def run_job(job: dict, timeout_s: float) -> dict:
    """The child's result, or `failed` with why the child gave none (time limit, crash)."""
    payload = {k: job[k] for k in ("kernel", "params", "target", "keep_dir", "fallback")}
    start = time.perf_counter()
    env = {**os.environ, "TILELANG_DISABLE_CACHE": "1",  # time and prove a real build, not a cache hit
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run([sys.executable, "-m", "repro.portability.child", json.dumps(payload)],
                              cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timed out after {timeout_s:g} s",
                "seconds": round(time.perf_counter() - start, 2)}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:] or ["no output"]
    return {"status": "failed", "reason": f"child process exited with code {proc.returncode}: {tail[0].strip()}",
            "seconds": round(time.perf_counter() - start, 2)}


def _row(job: dict, result: dict, version: str) -> dict:
    return {"kernel": job["kernel"], "module": f"kernels/{job['module']}.py", "target": job["target_name"],
            "target_spec": json.dumps(job["target"], sort_keys=True), "status": result["status"],
            "reason": result.get("reason", ""), "seconds": result.get("seconds", ""),
            "source_lines": result.get("source_lines", 0), "features": result.get("features", ""),
            "knobs": result.get("knobs", ""),
            "tilelang_version": version, "date": dt.date.today().isoformat()}


def run(cfg) -> list[dict]:
    """Build every planned pair, merge the rows into `portability.out`, print the table."""
    from importlib import metadata

    settings = settings_of(cfg)
    jobs = plan(settings)
    version = metadata.version("tilelang")
    workers = int(settings.get("jobs") or os.cpu_count() or 1)
    print(f"[portability] {len(jobs)} build(s), {workers} at a time, tilelang {version}")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda j: run_job(j, float(settings["timeout_s"])), jobs))
    rows = [_row(j, r, version) for j, r in zip(jobs, results)]
    out = Path(settings["out"])
    out = out if out.is_absolute() else PROJECT_ROOT / out
    merged = merge(read_rows(out), rows, order=list(settings["kernels"]), targets=list(settings["targets"]))
    write_rows(out, merged)
    print_table(rows)
    print(f"[portability] wrote {out}")
    return rows


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def merge(old: list[dict], new: list[dict], order: list[str], targets: list[str]) -> list[dict]:
    """Rows of pairs not rebuilt stay; rebuilt pairs take the new rows; config order."""
    fresh = {(r["kernel"], r["target"]) for r in new}
    rows = [r for r in old if (r["kernel"], r["target"]) not in fresh] + new

    def rank(r):
        k, t = r["kernel"], r["target"]
        return (order.index(k) if k in order else len(order), k, targets.index(t) if t in targets else len(targets), t)

    return sorted(rows, key=rank)


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def print_table(rows: list[dict]) -> None:
    """kernel x target grid of statuses, then the reason of everything not built."""
    targets = list(dict.fromkeys(r["target"] for r in rows))
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    cell = {(r["kernel"], r["target"]): r["status"] for r in rows}
    print(f"{'kernel':<20}" + "".join(f"{t:<14}" for t in targets))
    for k in kernels:
        print(f"{k:<20}" + "".join(f"{cell.get((k, t), '-'):<14}" for t in targets))
    for r in rows:
        if r["status"] != "built":
            print(f"  {r['kernel']} @ {r['target']}: {r['status']}: {r['reason']}")
