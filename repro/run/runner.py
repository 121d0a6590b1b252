"""Runs one experiment's sweep: validate, claim a GPU, detect hardware, then gate and time each (case, backend)."""
from __future__ import annotations

import datetime as dt
import os
import secrets
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from repro.results import manifest as mf
from repro.measure.experiment import Experiment
from repro.measure.hardware import detect_device, resolve_profile
from repro.measure.case import measure
from repro.run.plan import plan
from repro.run.shard import parse_shard, shard_label
from repro.results.store import ResultsStore, case_key, part_files
from repro.results.summary import print_summary
from repro.run.validate import check_launcher, settings_of

ROOT = Path(__file__).resolve().parents[2]
HARNESS_FILES = ["repro/measure/gate.py", "repro/measure/timer.py", "repro/measure/case.py"]
# The self-test's stand-in for a hardware profile: no peaks, so no roofline fractions.
CPU_PROFILE = {"name": "cpu", "vendor": "cpu", "peak_tflops": {}, "hbm_tbps": None}


@dataclass(frozen=True)
class Job:
    """Where this run sits: a single run, or one job of a Hydra multirun (sequential or parallel)."""

    multirun: bool = False
    parallel: bool = False  # other jobs of the sweep run at the same time (any launcher but `basic`)
    num: Optional[int] = None
    launcher: Any = None


def current_job() -> Job:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return Job()
    if not HydraConfig.initialized():
        return Job()
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return Job()
    target = str(hc.launcher.get("_target_", ""))
    return Job(True, not target.endswith("BasicLauncher"), hc.job.get("num"), hc.launcher)


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(2)


def source_files(exp: Experiment) -> list[Path]:
    files = [ROOT / f for f in HARNESS_FILES] + [ROOT / "experiments" / f"{exp.name}.py"]
    files += sorted((ROOT / "kernels").rglob("*.py")) + [ROOT / s for s in exp.sources]
    return files


def _row(exp, case, backend, meta: dict, result: dict) -> dict:
    return {"experiment": exp.name, "case": case_key(case), "backend": backend, "run_id": meta["run_id"],
            "hardware": meta["hardware"], **case, "seed": meta["seed"], "code_hash": meta["code_hash"],
            "env_key": meta["env_key"],
            "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **result}


def _reported_rows(exp: Experiment, cfg: DictConfig, run_id: str, hw: dict) -> list[dict]:
    rows = []
    for r in exp.reported(cfg) if exp.reported else []:
        params = {k: v for k, v in r.items() if k not in ("backend", "tflops", "gbps", "source", "median_ms")}
        rows.append({"experiment": exp.name, "case": case_key(params), "status": "reported", "run_id": run_id,
                     "hardware": hw["name"], **r})
    return rows


def run(cfg: DictConfig) -> int:
    exp, backends, cases = plan(cfg)
    job, device = current_job(), cfg.get("device", "cuda")
    if job.multirun:
        from repro.measure.devices import node_gpus

        check_launcher(job.launcher, len(node_gpus()) if device == "cuda" else 0)
    shard = parse_shard(cfg.get("shard"))
    label = f"[{exp.name} shard {shard[0]}/{shard[1]}] " if shard else f"[{exp.name}] "
    if cfg.get("dry_run"):
        for case in cases:
            print(f"{exp.name}  {case_key(case)}  backends={','.join(backends)}")
        print(f"{label}{len(cases)} case(s) x {len(backends)} backend(s); dry run, nothing measured")
        return 0
    if not cases:
        print(f"{label}no case falls in this shard; nothing to do")
        return 0
    from repro.measure.devices import exclusive_gpu

    # Jobs that may share a node each take a GPU of their own (SLURM already gives them one).
    pin = device == "cuda" and (job.multirun or shard is not None) and "SLURM_JOB_ID" not in os.environ
    with exclusive_gpu(label) if pin else nullcontext():
        return _sweep(cfg, exp, backends, cases, job, shard, device, label)


def _open_store(cfg, exp, hw, run_id, job: Job, shard) -> ResultsStore:
    """Jobs that may run beside others write a part file of their own; a single run, the main file."""
    root = Path(cfg.results_dir)
    if job.parallel or shard is not None:
        part = f"{run_id}.{shard_label(shard)}" + (f".job{job.num}" if job.num is not None else "")
        return ResultsStore(root, hw["name"], exp.name, part)
    if part_files(root, hw["name"], exp.name):  # a killed sweep's rows: fold them in first
        _merge_now(root, exp.name, "")
    return ResultsStore(root, hw["name"], exp.name)


def _merge_now(root: Path, experiment: str, label: str) -> None:
    from repro.run.merge import merge_all

    for line in merge_all(root, [experiment]).lines():
        print(f"{label}{line}")


def _sweep(cfg, exp, backends, cases, job: Job, shard, device: str, label: str) -> int:
    hw = CPU_PROFILE if device == "cpu" else resolve_profile(cfg.hardware.name, detect_device())
    run_id = str(cfg.get("run_id") or new_run_id())
    settings = settings_of(cfg)
    if settings.get("seed") is None:
        settings["seed"] = int.from_bytes(os.urandom(3), "little")  # fresh inputs every run
    root = Path(cfg.results_dir)
    manifest = mf.collect()
    mf.write(manifest, root / hw["name"], run_id)
    meta = {"run_id": run_id, "hardware": hw["name"], "seed": settings["seed"], "env_key": mf.env_key(manifest),
            "code_hash": mf.code_hash(source_files(exp))}
    store = _open_store(cfg, exp, hw, run_id, job, shard)
    store.params = list(cases[0].keys())
    if shard is None or shard[0] == 0:  # one job of a sharded sweep carries the published rows
        if store.path == store.main_path:
            store.drop_status("reported")
        store.write(_reported_rows(exp, cfg, run_id, hw))
    todo = [(c, b) for c in cases for b in backends
            if cfg.get("redo") or not store.is_done(case_key(c), b, meta["code_hash"], meta["env_key"])]
    print(f"{label}{len(cases) * len(backends) - len(todo)} measured already, {len(todo)} to run "
          f"on {manifest['gpu'].get('name') or device} ({hw['name']}), run {run_id}")
    execute(exp, todo, backends, settings, hw, store, meta, device)
    print_summary(store.df, exp.baseline)
    if store.path != store.main_path:
        if job.parallel:
            print(f"{label}rows in {store.path.as_posix()}; merged when the sweep ends "
                  "(or by `python -m repro.run.merge`)")
        else:
            _merge_now(root, exp.name, label)
    return 0


def _prepare(exp, todo, backends, settings, sandbox) -> None:
    """Compile and tune before timing: in the sandbox when any backend is isolated."""
    cases = sorted({case_key(c): c for c, _ in todo}.values(), key=case_key)
    if sandbox is not None:
        result = sandbox.prepare(cases, backends, float(settings["timeout_s"]) * max(1, len(cases)))
        failure = None if result["status"] == "ok" else f"{result['status']}: {result.get('error', '')}"
    else:
        try:
            exp.prepare(cases, backends)
            failure = None
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}"
    if failure:  # a failed search leaves the default schedules; the gate still decides
        print(f"[{exp.name}] schedule search failed, using defaults: {failure}")


def execute(exp, todo, backends, settings, hw, store, meta, device: str = "cuda") -> None:
    """Measure each pending (case, backend): untrusted ones in a sandbox child, the rest here."""
    from tqdm import tqdm

    from repro.run.isolate import Sandbox, isolated

    mode = settings["isolate"]
    any_isolated = any(isolated(mode, exp.backend(b)) for _, b in todo)
    flusher = None
    with Sandbox(exp.name, settings, hw, device) if any_isolated else nullcontext() as sandbox:
        if exp.prepare and todo:
            _prepare(exp, todo, backends, settings, sandbox)
        bar = tqdm(todo, desc=exp.name, unit="run", dynamic_ncols=True)
        for case, backend in bar:
            bar.set_postfix_str(f"{backend} {case_key(case)}"[:60])
            if isolated(mode, exp.backend(backend)):
                result = sandbox.measure(backend, case)
            else:
                if flusher is None and device != "cpu" and settings["flush_l2"]:
                    from repro.measure.timer import L2Flusher

                    flusher = L2Flusher()
                result = measure(exp, exp.backend(backend), case, settings, hw, flusher, device)
            store.write([_row(exp, case, backend, meta, result)])
            if result["status"] not in ("ok", "skipped"):
                tqdm.write(f"  {backend} {case_key(case)}: {result['status']}: {result.get('error', '')}")
