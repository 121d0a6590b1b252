"""Runs one experiment's sweep: validate, detect hardware, then gate and time each (case, backend)."""
from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from repro import manifest as mf
from repro.experiment import Experiment, load_experiment
from repro.hardware import detect_device, resolve_profile
from repro.measure import measure
from repro.store import ResultsStore, case_key
from repro.summary import print_summary
from repro.validate import check_experiment_name, settings_of, validate

ROOT = Path(__file__).resolve().parent.parent
HARNESS_FILES = ["repro/gate.py", "repro/timer.py", "repro/measure.py"]


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(2)


def source_files(exp: Experiment) -> list[Path]:
    files = [ROOT / f for f in HARNESS_FILES] + [ROOT / "experiments" / f"{exp.name}.py"]
    files += sorted((ROOT / "kernels").rglob("*.py")) + [ROOT / s for s in exp.sources]
    return files


def plan(cfg: DictConfig):
    """Everything that can be checked without a device: (experiment, backends, cases)."""
    check_experiment_name(cfg.experiment)
    exp = load_experiment(cfg.experiment)
    backends, cases = validate(cfg, exp)
    return exp, backends, cases


def _row(exp, case, backend, hw, run_id, code_hash, env_key, seed, result) -> dict:
    return {"experiment": exp.name, "case": case_key(case), "backend": backend, "run_id": run_id,
            "hardware": hw["name"], **case, "seed": seed, "code_hash": code_hash, "env_key": env_key,
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
    if cfg.get("dry_run"):
        for case in cases:
            print(f"{exp.name}  {case_key(case)}  backends={','.join(backends)}")
        print(f"{len(cases)} case(s) x {len(backends)} backend(s); dry run, nothing measured")
        return 0
    hw = resolve_profile(cfg.hardware.name, detect_device())
    run_id = cfg.get("run_id") or new_run_id()
    settings = settings_of(cfg)
    if settings.get("seed") is None:
        settings["seed"] = int.from_bytes(os.urandom(3), "little")  # fresh inputs every run
    root = Path(cfg.results_dir)
    manifest = mf.collect()
    mf.write(manifest, root / hw["name"], run_id)
    env_key, code_hash = mf.env_key(manifest), mf.code_hash(source_files(exp))
    store = ResultsStore(root, hw["name"], exp.name)
    store.params = list(cases[0].keys())
    store.drop_status("reported")
    store.write(_reported_rows(exp, cfg, run_id, hw))
    todo = [(c, b) for c in cases for b in backends
            if cfg.get("redo") or not store.is_done(case_key(c), b, code_hash, env_key)]
    print(f"[{exp.name}] {len(cases) * len(backends) - len(todo)} measured already, {len(todo)} to run "
          f"on {manifest['gpu'].get('name')} ({hw['name']}), run {run_id}")
    if exp.prepare and todo and not settings["isolate"]:
        try:
            exp.prepare(sorted({case_key(c): c for c, _ in todo}.values(), key=case_key), backends)
        except Exception as exc:  # a failed search leaves the default schedules; the gate still decides
            print(f"[{exp.name}] schedule search failed, using defaults: {type(exc).__name__}: {exc}")
    execute(exp, todo, settings, hw, store, run_id, code_hash, env_key, cfg)
    print_summary(store.df, exp.baseline)
    return 0


def execute(exp, todo, settings, hw, store, run_id, code_hash, env_key, cfg) -> None:
    """Measure each pending (case, backend), in this process or in a child with a time limit."""
    from tqdm import tqdm

    from repro.isolate import measure_isolated
    from repro.timer import L2Flusher

    flusher = None if settings["isolate"] else L2Flusher()
    bar = tqdm(todo, desc=exp.name, unit="run", dynamic_ncols=True)
    for case, backend in bar:
        bar.set_postfix_str(f"{backend} {case_key(case)}"[:60])
        if settings["isolate"]:
            result = measure_isolated(exp.name, backend, case, settings, hw)
        else:
            result = measure(exp, exp.backend(backend), case, settings, hw, flusher)
        store.write([_row(exp, case, backend, hw, run_id, code_hash, env_key, settings["seed"], result)])
        if result["status"] not in ("ok", "skipped"):
            tqdm.write(f"  {backend} {case_key(case)}: {result['status']}: {result.get('error', '')}")
