"""Runs the scoreboard's entries through the sweeps' own `execute`: the same timer, gate and
interleaved trials, no schedule search, every row into results/<card>/quick.csv."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Mapping

from repro.measure.experiment import CONFIG_DIR, load_experiment
from repro.quick.plan import KERNEL, QuickEntry
from repro.results import manifest as mf
from repro.results.store import ResultsStore, case_key, parse_case

QUICK = "quick"  # results/<card>/quick.csv


def compose(entry: QuickEntry, results_dir: str):
    """The experiment's own composed config (its tolerances, bench settings and device)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=[f"experiment={entry.experiment}",
                                                  f"backends=[{','.join(entry.backends)}]",
                                                  f"results_dir={results_dir}"])


class KernelRows:
    """What `execute` writes to: each row tagged with `kernel=` (so kernels that share an
    experiment's case grammar keep apart in one file) and our kernel's schedule source."""

    def __init__(self, store: ResultsStore, entry: QuickEntry, schedule: Callable[[dict], str],
                 on_case: Callable[[str, list[dict]], None]):
        self.store, self.entry, self.schedule, self.on_case = store, entry, schedule, on_case
        self.main_path = store.main_path

    def trials_of(self, case: str, backend: str) -> list[float]:
        return []  # ratios are taken in compare.py, against the baseline that ran

    def write(self, rows) -> None:
        tagged = []
        for row in rows:
            row = dict(row)
            case = parse_case(row["case"])
            row["case"], row[KERNEL] = case_key({KERNEL: self.entry.kernel, **case}), self.entry.kernel
            if row["backend"] == self.entry.ours:
                row["schedule"] = self.schedule(case)
            tagged.append(row)
        self.store.write(tagged)
        self.on_case(self.entry.kernel, tagged)


def _schedule_of(exp) -> Callable[[dict], str]:
    def describe(case: dict) -> str:
        if exp.schedule is None:
            return "default"
        try:
            return exp.schedule(case)
        except Exception as exc:  # a key that needs a device, say: the row still runs
            return f"unknown ({type(exc).__name__})"

    return describe


def run_entries(entries: list[QuickEntry], results_dir: str, run_id: str, progress) -> dict:
    """Measure every entry; returns {hardware, seconds, cases, manifest path}. `progress(kernel,
    rows)` is called after each case."""
    from repro.baselines import activate, in_use
    from repro.measure.hardware import detect_device, resolve_profile
    from repro.run.runner import CPU_PROFILE, execute, source_files
    from repro.run.validate import check_results_dir, settings_of

    os.environ.setdefault("TQDM_DISABLE", "1")  # one progress line per case instead
    activate()
    started, hw, manifest, store, sweep = time.perf_counter(), None, None, None, {}
    for entry in entries:
        activate()  # a baseline whose build finished since the last kernel (a build beside the run)
        cfg = compose(entry, results_dir)
        device = cfg.get("device", "cuda")
        if hw is None:
            hw = CPU_PROFILE if device == "cpu" else resolve_profile(cfg.hardware.name, detect_device())
            check_results_dir(results_dir, hw["name"])
            manifest = mf.collect()
            manifest["baselines"] = in_use()
            store = ResultsStore(results_dir, hw["name"], QUICK)
            store.on_first_write = lambda: mf.write(manifest, Path(results_dir) / hw["name"], run_id)
        exp = load_experiment(entry.experiment)
        settings = settings_of(cfg)
        if settings.seed is None:
            settings = settings.replace(seed=int.from_bytes(os.urandom(3), "little"))
        meta = {"run_id": run_id, "hardware": hw["name"], "seed": settings.seed, "env_key": mf.env_key(manifest),
                "code_hash": mf.code_hash(source_files(exp))}
        todo = [(qc.case, b) for qc in entry.cases for b in entry.backends]
        clock: dict = {}
        execute(exp, todo, entry.backends, settings, hw, KernelRows(store, entry, _schedule_of(exp), progress),
                meta, device, search=False, clock=clock)
        sweep[entry.kernel] = {"cases": len(entry.cases), **{k: round(v, 1) for k, v in clock.items()}}
    seconds = round(time.perf_counter() - started, 1)
    cases = sum(len(e.cases) for e in entries)
    manifest[QUICK] = {"kernels": sweep, "wall_s": seconds, "cases": cases,
                       "seconds_per_case": round(seconds / max(1, cases), 2)}
    path = mf.path_of(Path(results_dir) / hw["name"], run_id)
    if path.exists():
        mf.write(manifest, path.parent, run_id)
    return {"hardware": hw["name"], "seconds": seconds, "cases": cases, "manifest": path}


def estimate(folder: Path, cases: int, fallback_per_case: float) -> tuple[float, str]:
    """Seconds the run should take: the newest earlier quick run of this card, else the fallback."""
    per_case, basis = fallback_per_case, f"{fallback_per_case:g} s per case (no earlier quick record here)"
    try:
        found = [m for m in mf.read_manifests(folder).values() if isinstance(m.get(QUICK), Mapping)]
    except Exception:
        found = []
    if found:
        newest = max(found, key=lambda m: str(m.get("timestamp") or m.get("time") or ""))
        value = newest[QUICK].get("seconds_per_case")
        if isinstance(value, (int, float)) and value > 0:
            per_case, basis = float(value), f"{value:g} s per case, from the last quick run here"
    return per_case * cases, basis
