"""Portability table (claim C6): every TileLang kernel of kernels/, built for every target.

`run(cfg)` builds each (kernel, target) pair of `cfg.portability` in its own child process with
a time limit (a crash or hang costs one row), a few at a time, and writes one row per pair to
`portability.out` (results/portability.csv), replacing the rows of the pairs it rebuilt. It needs
no GPU: CUDA targets are compiled with nvcc, HIP and Ascend lowered to source where their
compilers (hipcc, bisheng) are absent. `python run.py experiment=portability`.

Statuses: `compiled` (a device code object was produced), `lowered` (device source only),
`run` (compiled, and the measured results of a device of that target show the kernel's
experiment ran it: `portability.ran_on`), `failed`, `not available` (no toolchain can exist
here). A rerun resumes: a pair whose row has the same `code_hash` (kernel module, portability
code, shape, target and toolchain) and TileLang version is kept, not rebuilt (`redo=true` rebuilds).
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from repro.measure.child import child_env, death_text
from repro.measure.experiment import config_section
from repro.portability.child import MARKER

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["kernel", "module", "target", "target_spec", "status", "reason", "seconds", "source_lines",
           "features", "knobs", "tilelang_version", "date", "code_hash"]
STATUSES = ("compiled", "lowered", "run", "failed", "not available")


def settings_of(cfg) -> dict:
    """The `portability` section as plain Python data, its options checked (one clear line each)."""
    import math

    from repro.run.validate import ConfigError

    settings = config_section(cfg, "portability")
    timeout = settings.get("timeout_s")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError(f"portability.timeout_s={timeout!r}: must be a number of seconds > 0")
    jobs = settings.get("jobs")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ConfigError(f"portability.jobs={jobs!r}: null (one per CPU core) or a positive integer")
    if not isinstance(settings.get("redo", False), bool):
        raise ConfigError(f"portability.redo={settings.get('redo')!r}: must be true or false")
    for key in ("only_kernels", "only_targets"):
        value = settings.get(key)
        if value is not None and (not isinstance(value, list) or not value):
            raise ConfigError(f"portability.{key}={value!r}: null or a non-empty list")
    if not isinstance(settings.get("out"), str) or not settings["out"].strip():
        raise ConfigError(f"portability.out={settings.get('out')!r}: a file path")
    return settings


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
    only_on = settings.get("kernel_targets") or {}
    for name, names in only_on.items():
        if name not in kernels or not set(names) <= set(targets):
            raise ConfigError(f"portability.kernel_targets.{name}: needs a kernel and targets of this config")
    extra = settings.get("target_params") or {}
    return [{"kernel": k, "module": KERNELS[k][0], "target_name": t, "target": dict(targets[t]),
             "params": {**dict(kernels[k] or {}), **((extra.get(t) or {}).get(k) or {})},
             "keep_dir": settings.get("keep_sources"),
             "fallback": ((settings.get("fallbacks") or {}).get(t) or {}).get(k)}
            for k in kernels if k in only_k for t in targets if t in only_t and t in only_on.get(k, [t])]


def code_hash(job: dict) -> str:
    """What a build depends on: the kernel module, this package, the job, the toolchain found."""
    from repro.portability.targets import compiler_for, hip_clang, kind_of

    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for file in [PROJECT_ROOT / "kernels" / f"{job['module']}.py", *sorted(here.glob("*.py"))]:
        digest.update(file.read_bytes() if file.is_file() else b"")
    toolchain = [compiler_for(job["target"])[1]] + ([hip_clang()[2]] if kind_of(job["target"]) == "hip" else [])
    digest.update(json.dumps([job["params"], job["target"], job["fallback"], toolchain], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def run_job(job: dict, timeout_s: float) -> dict:
    """The child's result, or `failed` with why the child gave none (time limit, crash)."""
    payload = {k: job[k] for k in ("kernel", "params", "target", "keep_dir", "fallback")}
    start = time.perf_counter()
    env = child_env(TILELANG_DISABLE_CACHE="1")  # time and prove a real build, not a cache hit
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
    return {"status": "failed", "reason": f"child process {death_text(proc.returncode)}: {tail[0].strip()}",
            "seconds": round(time.perf_counter() - start, 2)}


def _row(job: dict, result: dict, version: str) -> dict:
    """One CSV row of a build result."""
    return {"kernel": job["kernel"], "module": f"kernels/{job['module']}.py", "target": job["target_name"],
            "target_spec": json.dumps(job["target"], sort_keys=True), "status": result["status"],
            "reason": result.get("reason", ""), "seconds": result.get("seconds", ""),
            "source_lines": result.get("source_lines", 0), "features": result.get("features", ""),
            "knobs": result.get("knobs", ""),
            "tilelang_version": version, "date": dt.date.today().isoformat(), "code_hash": job.get("code_hash", "")}


def run(cfg) -> list[dict]:
    """Build every planned pair, merge the rows into `portability.out`, print the table."""
    from importlib import metadata

    settings = settings_of(cfg)
    jobs = plan(settings)
    version = metadata.version("tilelang")
    out = Path(settings["out"])
    out = out if out.is_absolute() else PROJECT_ROOT / out
    old = read_rows(out, ("kernel", "target", "status"))
    done = {(r["kernel"], r["target"]): r for r in old if r.get("status") in STATUSES
            and r.get("tilelang_version") == version and r.get("code_hash")}
    for job in jobs:
        job["code_hash"] = code_hash(job)
    kept = [] if settings.get("redo") else [done[(j["kernel"], j["target_name"])] for j in jobs
                                            if done.get((j["kernel"], j["target_name"]), {}).get("code_hash") == j["code_hash"]]
    kept_pairs = {(r["kernel"], r["target"]) for r in kept}
    jobs = [j for j in jobs if (j["kernel"], j["target_name"]) not in kept_pairs]
    workers = int(settings.get("jobs") or os.cpu_count() or 1)
    print(f"[portability] {len(jobs)} build(s), {len(kept)} kept from {out.name}, {workers} at a time, "
          f"tilelang {version}")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda j: run_job(j, float(settings["timeout_s"])), jobs))
    rows = [mark_run(r, settings) for r in [*kept, *(_row(j, r, version) for j, r in zip(jobs, results))]]
    merged = merge(old, rows, order=list(settings["kernels"]), targets=list(settings["targets"]))
    write_rows(out, merged)
    print_table(rows)
    print(f"[portability] wrote {out}")
    return rows


def mark_run(row: dict, settings: dict) -> dict:
    """A compiled (or already run) kernel becomes `run` when the measured results of a device of
    its target (`ran_on`) hold `ok` rows of its experiment's TileLang backend; else `compiled`."""
    ran_on = (settings.get("ran_on") or {}).get(row["target"]) or []
    experiment, backend = (settings.get("experiment_of") or {}).get(row["kernel"], [row["kernel"], "tilelang"])
    reason = row["reason"].split(" | ran: ")[0]
    if row["status"] not in ("compiled", "run"):
        return row
    results = Path(settings.get("results") or PROJECT_ROOT / "results")
    results = results if results.is_absolute() else PROJECT_ROOT / results
    for hardware in ran_on:
        ok = [r for r in read_rows(results / hardware / f"{experiment}.csv")
              if r.get("backend") == backend and r.get("status") == "ok"]
        if ok:
            where = f"results/{hardware}/{experiment}.csv"
            return {**row, "status": "run", "reason": f"{reason} | ran: {len(ok)} ok rows of {backend} in {where}"}
    return {**row, "status": "compiled", "reason": reason}


def read_rows(path: Path, required: tuple = ()) -> list[dict]:
    """The rows of a CSV file; with `required`, a file lacking those columns or cut mid-row is refused
    (StoreError), never extended or overwritten."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    cut = [i + 2 for i, r in enumerate(rows) if None in r.values() or None in r] if required else []
    if missing or cut:
        from repro.results.store import StoreError

        why = f"no {', '.join(missing)} column" if missing else f"line {cut[0]} has the wrong number of fields"
        raise StoreError(f"{path.as_posix()}: not a readable portability table ({why}); fix or move it")
    return rows


def merge(old: list[dict], new: list[dict], order: list[str], targets: list[str]) -> list[dict]:
    """Rows of pairs not rebuilt stay; rebuilt pairs take the new rows; config order."""
    fresh = {(r["kernel"], r["target"]) for r in new}
    rows = [r for r in old if (r["kernel"], r["target"]) not in fresh] + new

    def rank(r):
        k, t = r["kernel"], r["target"]
        return (order.index(k) if k in order else len(order), k, targets.index(t) if t in targets else len(targets), t)

    return sorted(rows, key=rank)


def write_rows(path: Path, rows: list[dict]) -> None:
    """Replace the table atomically: a run killed mid-write leaves the old file whole."""
    import pandas as pd

    from repro.results.store import atomic_write_csv

    atomic_write_csv(pd.DataFrame([{c: r.get(c, "") for c in COLUMNS} for r in rows], columns=COLUMNS), path)


def print_table(rows: list[dict]) -> None:
    """kernel x target grid of statuses, then the reason of everything not built."""
    targets = list(dict.fromkeys(r["target"] for r in rows))
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    cell = {(r["kernel"], r["target"]): r["status"] for r in rows}
    print(f"{'kernel':<20}" + "".join(f"{t:<14}" for t in targets))
    for k in kernels:
        print(f"{k:<20}" + "".join(f"{cell.get((k, t), '-'):<14}" for t in targets))
    for r in rows:
        if r["status"] not in ("compiled", "run"):
            print(f"  {r['kernel']} @ {r['target']}: {r['status']}: {r['reason']}")
