"""Runs one experiment's sweep: validate, claim a GPU, detect hardware, then gate and time each (case, backend)."""
from __future__ import annotations

import ast
import datetime as dt
import os
import secrets
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from repro.results import manifest as mf
from repro.measure.experiment import Experiment
from repro.measure.hardware import detect_device, resolve_profile
from repro.measure.case import measure_case
from repro.measure.stats import case_interval, parse_trials
from repro.run.plan import plan
from repro.run.shard import parse_shard, shard_label
from repro.results.store import (ResultRow, ResultsStore, Status, case_key, gate_key, gate_of, gate_settings,
                                 part_files, write_artifact)
from repro.results.summary import print_summary
from repro.run.validate import check_launcher, check_results_dir, settings_of

ROOT = Path(__file__).resolve().parents[2]
# The code that measures one case, in the sweep's process and in a sandbox child.
HARNESS_ENTRIES = ["repro/measure/case.py", "repro/run/isolate.py"]
PROJECT_PACKAGES = ("experiments", "kernels", "repro")  # followed by import_closure; the rest is the environment
# The self-test's stand-in for a hardware profile: no peaks, so no roofline fractions.
CPU_PROFILE = {"name": "cpu", "vendor": "cpu", "peak_tflops": {}, "hbm_tbps": None}


@dataclass(frozen=True)
class Job:
    """Where this run sits: a single run, or one job of a Hydra multirun (sequential or parallel)."""

    multirun: bool = False
    parallel: bool = False  # other jobs of the sweep run at the same time (any launcher but `basic`)
    num: Optional[int] = None
    launcher: Any = None


def _now() -> float:
    """The clock a time budget reads (tests replace it)."""
    return time.monotonic()


class TimeBudget:
    """`time_budget_s`: no case starts once `seconds` have passed since `started` (when the run
    began, so validation, the GPU claim and the schedule search count too). A case under way is
    never cut, and a run's first case always starts, so every run makes progress however small
    the budget. `seconds` None: no limit."""

    def __init__(self, seconds: Optional[float] = None, started: Optional[float] = None):
        self.seconds = seconds
        self.started = _now() if started is None else started

    def spent(self) -> bool:
        return self.seconds is not None and _now() - self.started >= self.seconds


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep, carrying the one line that says what was kept and how to resume
    (repro/cli.py prints it and exits 130)."""


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


def _module_file(name: str) -> Optional[Path]:
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_names(path: Path) -> set[str]:
    """Every module name an import statement in `path` names, at any depth (function-level too);
    `from a import b` names both `a` and `a.b` (b may be a module), relative imports resolved."""
    rel = path.relative_to(ROOT).with_suffix("").parts
    package = rel[:-1]  # a module's package; for a package's __init__, the package itself
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join([*package[:len(package) - node.level + 1], *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_closure(entries: list[Path]) -> list[Path]:
    """The project's own files (PROJECT_PACKAGES) that importing `entries` runs, transitively,
    with the `__init__.py` of each package on the way."""
    seen: set[Path] = set()
    todo = list(entries)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for name in [module, *_imported_names(path)]:  # importing a module runs its packages' __init__ too
            parts = name.split(".")
            if parts[0] not in PROJECT_PACKAGES:
                continue
            for depth in range(1, len(parts) + 1):
                found = _module_file(".".join(parts[:depth]))
                if found is not None and found not in seen:
                    todo.append(found)
    return sorted(seen)


def source_files(exp: Experiment) -> list[Path]:
    """What a row's `code_hash` covers: the import closure of the experiment's module and of the
    code that measures a case (in-process and in a child), plus the experiment's declared extras."""
    entries = [ROOT / "experiments" / f"{exp.name}.py", *(ROOT / f for f in HARNESS_ENTRIES)]
    return sorted({*import_closure(entries), *(ROOT / s for s in exp.sources)})


def gate_dtype(exp: Experiment, case: dict) -> Optional[str]:
    """The dtype whose tolerance the gate applies to a case (as repro/measure/case.py picks it)."""
    try:
        return str(case.get("dtype", exp.flops_dtype(case)))
    except Exception:
        return None


def _row(exp, case, backend, meta: dict, result: dict) -> dict:
    return {"experiment": exp.name, "case": case_key(case), "backend": backend, "run_id": meta["run_id"],
            "hardware": meta["hardware"], **case, "seed": meta["seed"], "code_hash": meta["code_hash"],
            "env_key": meta["env_key"],
            "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **result}


def _reported_rows(exp: Experiment, cfg: DictConfig, run_id: str, hw: dict) -> list[ResultRow]:
    """The experiment's published figures, each under its own `<backend>_paper` name (never a measured key)."""
    rows = []
    for r in exp.reported(cfg) if exp.reported else []:
        figures = {k: r[k] for k in ("tflops", "gbps", "median_ms") if r.get(k) is not None}
        params = {k: v for k, v in r.items() if k not in ("backend", "tflops", "gbps", "source", "median_ms")}
        rows.append(ResultRow.published(exp.name, params, r["backend"], run_id, r["source"], hw["name"], **figures))
    return rows


def run(cfg: DictConfig) -> int:
    started = _now()  # `time_budget_s` counts from here
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
        return _sweep(cfg, exp, backends, cases, job, shard, device, label,
                      TimeBudget(cfg.get("time_budget_s"), started))


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


def _sweep(cfg, exp, backends, cases, job: Job, shard, device: str, label: str,
           budget: Optional[TimeBudget] = None) -> int:
    hw = CPU_PROFILE if device == "cpu" else resolve_profile(cfg.hardware.name, detect_device())
    check_results_dir(cfg.results_dir, hw["name"])
    run_id = str(cfg.get("run_id") or new_run_id())
    settings = settings_of(cfg)
    if settings.seed is None:
        settings = settings.replace(seed=int.from_bytes(os.urandom(3), "little"))  # fresh inputs every run
    root = Path(cfg.results_dir)
    manifest = mf.collect()
    # Baselines built by `make baselines` (repro/baselines): on the path for the probes, and in the
    # manifest with their pinned version or commit and how they were built.
    from repro.baselines import activate, in_use

    activate()
    manifest["baselines"] = in_use()
    # What decides a verdict is part of the run's record and of each row's resume key.
    manifest["gate"] = {**gate_settings(settings), "key": gate_key(settings)}
    meta = {"run_id": run_id, "hardware": hw["name"], "seed": settings.seed, "env_key": mf.env_key(manifest),
            "code_hash": mf.code_hash(source_files(exp))}
    store = _open_store(cfg, exp, hw, run_id, job, shard)
    store.params = list(cases[0].keys())
    # The manifest follows the run's first stored row: a run refused before that leaves none.
    store.on_first_write = lambda: mf.write(manifest, root / hw["name"], run_id)
    if shard is None or shard[0] == 0:  # one job of a sharded sweep carries the published rows
        if store.path == store.main_path:
            store.drop_status(Status.REPORTED)
        store.write(_reported_rows(exp, cfg, run_id, hw))
    todo = [(c, b) for c in cases for b in backends
            if cfg.get("redo") or not store.is_done(case_key(c), b, meta["code_hash"], meta["env_key"],
                                                    gate_of(settings, gate_dtype(exp, c)))]
    print(f"{label}{len(cases) * len(backends) - len(todo)} measured already, {len(todo)} to run "
          f"on {manifest['gpu'].get('name') or device} ({hw['name']}), run {run_id}")
    started, clock = time.perf_counter(), {}
    budget = budget or TimeBudget()
    try:
        left = execute(exp, todo, backends, settings, hw, store, meta, device, search=bool(cfg.get("search", True)),
                       clock=clock, budget=budget)
    except KeyboardInterrupt:
        raise Interrupted(_interrupted(store, run_id, len(todo), bool(cfg.get("redo")))) from None
    print_summary(store.df, exp.baseline)
    cases_todo, cases_left = len({case_key(c) for c, _ in todo}), len({case_key(c) for c, _ in left})
    if todo:  # the sweep's time, as a figure of the run: in its manifest and on the console
        sweep = {"experiment": exp.name, "wall_s": round(time.perf_counter() - started, 1),
                 "rows": len(todo) - len(left), "cases": cases_todo - cases_left,
                 **{k: round(v, 1) for k, v in sorted(clock.items())}}
        if budget.seconds is not None:  # what a budget left for the next run (0 and 0: it finished)
            sweep.update(budget_s=budget.seconds, cases_left=cases_left, runs_left=len(left))
        manifest["sweep"] = sweep
        if mf.path_of(root / hw["name"], run_id).exists():
            mf.write(manifest, root / hw["name"], run_id)
        print(f"{label}sweep time {sweep['wall_s']} s for {sweep['rows']} rows: "
              + ", ".join(f"{k} {v}" for k, v in sweep.items() if k in clock))
    if store.path != store.main_path:
        if job.parallel:
            print(f"{label}rows in {store.path.as_posix()}; merged when the sweep ends "
                  "(or by `python -m repro.run.merge`)")
        else:
            _merge_now(root, exp.name, label)
    if left:
        print(_budget_spent(label, budget, cases_todo, cases_left, len(left), bool(cfg.get("redo"))))
    return 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _budget_spent(label: str, budget: TimeBudget, cases: int, cases_left: int, runs_left: int, redo: bool) -> str:
    """The line a run stopped by `time_budget_s` ends with (it exits 0): what is left, how to resume."""
    again = ("run the same command without redo=true to resume (with it, every case is measured again)" if redo
             else "run the same command again to resume")
    return (f"{label}time budget {budget.seconds:g} s spent after {cases - cases_left} of {_plural(cases, 'case')}; "
            f"{_plural(cases_left, 'case')} ({_plural(runs_left, 'run')}) left: {again}")


def _interrupted(store: ResultsStore, run_id: str, todo: int, redo: bool) -> str:
    """The line a Ctrl-C ends a sweep with: the rows this run stored, where, and how to resume.
    Counted from the file itself: a Ctrl-C during a write leaves the store's frame one write ahead."""
    from repro.results.store import read_results

    try:
        df = read_results(store.path) if store.path.exists() else store.df.iloc[0:0]
    except Exception:  # a file that cannot be read back: say what the store last held
        df = store.df
    kept = 0 if df.empty else int(((df["run_id"] == run_id) & (df["status"] != Status.REPORTED)).sum())
    again = ("run the same command without redo=true to resume (with it, every row is measured again)" if redo
             else "run the same command again to resume: rows already stored are skipped")
    return (f"interrupted: {kept} of the {todo} row(s) this run had to measure are kept in "
            f"{store.path.as_posix()}; {again}")


def _sandbox():
    """The sandbox class a sweep uses: repro.run.isolate's, with children that leave Ctrl-C to the
    sweep (no traceback of theirs; the sweep says what was kept) and are killed at once on it."""
    import signal
    import threading

    from repro.run.isolate import Sandbox

    class SweepSandbox(Sandbox):
        def _start(self) -> None:
            if threading.current_thread() is not threading.main_thread():
                return super()._start()
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the child's interpreter
            try:
                super()._start()
            finally:
                signal.signal(signal.SIGINT, previous)

        def __exit__(self, kind, *exc) -> None:
            if kind is not None and issubclass(kind, KeyboardInterrupt) and self.proc is not None:
                self.proc.kill()  # mid-measurement: do not wait for it
            super().__exit__(kind, *exc)

    return SweepSandbox


def _prepare(exp, todo, backends, settings, sandbox) -> None:
    """Compile and tune before timing: in the sandbox when any backend is isolated."""
    cases = sorted({case_key(c): c for c, _ in todo}.values(), key=case_key)
    if sandbox is not None:
        result = sandbox.prepare(cases, backends, settings.timeout_s * max(1, len(cases)))
        failure = None if result["status"] == "ok" else f"{result['status']}: {result.get('error', '')}"
    else:
        try:
            exp.prepare(cases, backends)
            failure = None
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}"
    if failure:  # a failed search leaves the default schedules; the gate still decides
        print(f"[{exp.name}] schedule search failed, using defaults: {failure}")


def _with_intervals(exp, case: dict, results: dict, store) -> dict:
    """Each timed row's speedup over the experiment's baseline with its 95% interval, from trials
    paired with the baseline's (of this batch, or its stored row of an earlier one)."""
    base = results.get(exp.baseline)
    base_trials = parse_trials(base.get("trial_ms")) if base else store.trials_of(case_key(case), exp.baseline)
    out = {}
    for name, row in results.items():
        trials = parse_trials(row.get("trial_ms"))
        if row.get("status") == "ok" and trials and base_trials and name != exp.baseline:
            row = {**row, **dict(zip(("speedup", "speedup_lo", "speedup_hi"), case_interval(base_trials, trials)))}
        out[name] = row
    return out


def execute(exp, todo, backends, settings, hw, store, meta, device: str = "cuda", search: bool = True,
            clock: dict | None = None, budget: TimeBudget | None = None) -> list[tuple[dict, str]]:
    """Measure each pending case, its backends' timing trials interleaved: in a sandbox child when
    any of them is untrusted, else here; first, with `search`, the experiment's schedule search.
    `clock` collects where the time went: search_s, gate_s, timing_s, isolated_s (whole cases in
    a child, where the split is not seen). With a `budget`, no case after the first starts once it
    is spent; returns the (case, backend) pairs left unmeasured for that reason (none otherwise)."""
    from tqdm import tqdm

    from repro.run.isolate import isolated

    mode = settings.isolate
    any_isolated = any(isolated(mode, exp.backend(b)) for _, b in todo)
    by_case: dict[str, tuple[dict, list[str]]] = {}
    for case, backend in todo:
        by_case.setdefault(case_key(case), (case, []))[1].append(backend)
    flusher, clock, left = None, clock if clock is not None else {}, []
    with _sandbox()(exp.name, settings, hw, device) if any_isolated else nullcontext() as sandbox:
        if exp.prepare and todo and search:
            start = time.perf_counter()
            _prepare(exp, todo, backends, settings, sandbox)
            clock["search_s"] = time.perf_counter() - start
        with tqdm(total=len(todo), desc=exp.name, unit="run", dynamic_ncols=True) as bar:
            pending = list(by_case.items())
            for i, (key, (case, names)) in enumerate(pending):
                if i and budget is not None and budget.spent():  # checked between cases, never within one
                    left = [(c, n) for _, (c, rest) in pending[i:] for n in rest]
                    break
                bar.set_postfix_str(key[:60])
                # A case with any untrusted backend goes whole to the child, so that its backends'
                # trials still interleave; trusted ones then cost nothing extra there.
                if any(isolated(mode, exp.backend(n)) for n in names):
                    start = time.perf_counter()
                    results = sandbox.measure_case(names, case)
                    clock["isolated_s"] = clock.get("isolated_s", 0.0) + time.perf_counter() - start
                else:
                    if flusher is None and device != "cpu" and settings.flush_l2:
                        from repro.measure.timer import L2Flusher

                        flusher = L2Flusher()
                    results = measure_case(exp, [exp.backend(n) for n in names], case, settings, hw, flusher, device,
                                           clock)
                results = _with_intervals(exp, case, results, store)
                for name in names:
                    for table, rows in (results[name].pop("artifacts", None) or {}).items():
                        write_artifact(store.main_path.parent.parent, meta["hardware"], exp.name, table,
                                       key, name, rows)
                gate = gate_of(settings, gate_dtype(exp, case))
                notes = store.write([{**_row(exp, case, name, meta, results[name]), "gate": gate} for name in names])
                for note in notes or []:  # a failure that would have replaced an ok row of the same code
                    tqdm.write(f"  {note}")
                bar.update(len(names))
                for name in names:
                    if results[name]["status"] not in ("ok", "skipped"):
                        tqdm.write(f"  {name} {key}: {results[name]['status']}: {results[name].get('error', '')}")
    return left
