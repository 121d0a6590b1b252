"""Schedule search outside the timed region: compile candidates in parallel, time them, cache the winner."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Mapping, Sequence, TypeVar

K = TypeVar("K")
CACHE_DIR = Path(os.environ.get("REPRO_CACHE", Path.home() / ".cache" / "tilelang-repro"))


ROOT = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=None)
def sources_hash(patterns: tuple) -> str:
    """Hash of the repository files matching `patterns` (globs relative to the repository root); the
    rule of repro/results/manifest.code_hash, kept here so that measure/ does not import results/."""
    h = hashlib.sha256()
    for path in sorted({p for pattern in patterns for p in ROOT.glob(pattern)}):
        h.update(path.relative_to(ROOT).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:10]


class KnobCache:
    """A JSON file per operator: `key -> knobs dict`, keyed by shape, dtype and GPU name, and by
    the kernel sources (`sources`, globs): a schedule searched for one version of a kernel is not
    taken by another (an edited kernel, or the default table it was searched against, may want
    another schedule)."""

    def __init__(self, name: str, sources: Sequence[str] = ()):
        self.path = CACHE_DIR / f"{name}-knobs.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.version = sources_hash(tuple(sources)) if sources else ""

    def _key(self, key: str) -> str:
        return f"{key},code={self.version}" if self.version else key

    def get(self, key: str):
        return self.data.get(self._key(key))

    def describe(self, key: str) -> str:
        """'cached' when a searched schedule is stored for `key`, else 'default'."""
        return "cached" if self._key(key) in self.data else "default"

    def put(self, key: str, value: dict) -> None:
        """Re-read, add, replace atomically, under a lock: shards tuning at once lose no entry."""
        import fcntl
        import tempfile

        key = self._key(key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.path.exists():
                self.data = {**json.loads(self.path.read_text()), **self.data}
            self.data[key] = value
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(self.data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)


def compile_all(jobs: Sequence[Callable[[], object]], workers: int | None = None) -> list:
    """Run compile jobs on a thread pool (nvcc runs in subprocesses); failures come back as exceptions."""
    def safe(job):
        try:
            return job()
        except Exception as exc:  # not chosen; pick_fastest names it with its error
            return exc

    with ThreadPoolExecutor(max_workers=workers or min(16, os.cpu_count() or 2)) as pool:
        return list(pool.map(safe, jobs))


def log_failure(candidate, what: str, exc: BaseException) -> None:
    """A candidate left out of a search is named, with the first line of its error (never dropped silently)."""
    first = str(exc).strip().splitlines()[0][:240] if str(exc).strip() else ""
    print(f"[search] candidate {candidate} {what}: {type(exc).__name__}: {first}", file=sys.stderr, flush=True)


def pick_fastest(candidates: Sequence[K], runners: Sequence[Callable[[], object] | Exception]) -> K:
    """Time each compiled candidate briefly with the suite's timer; return the fastest."""
    from repro.measure.settings import TimerSettings
    from repro.measure.timer import time_cuda

    # The search's own short budget (ranking candidates, not a recorded figure).
    brief = TimerSettings(warmup_ms=5, rep_ms=30, min_reps=5, max_reps=30, flush_l2=True, cuda_graph=False)
    best, best_ms = None, float("inf")
    for cand, run in zip(candidates, runners):
        if isinstance(run, Exception):
            log_failure(cand, "could not be built", run)
            continue
        try:
            ms = time_cuda(run, brief).median_ms
        except Exception as exc:
            log_failure(cand, "fails to run", exc)
            continue
        if ms < best_ms:
            best, best_ms = cand, ms
    if best is None:
        raise RuntimeError("no schedule candidate compiled and ran")
    return best


def search(cache: KnobCache, groups: Mapping[str, dict], candidates: Callable[[dict], Sequence[K]],
           compile_one: Callable[[dict, K], object], runner: Callable[[dict, dict, K, object], Callable[[], object]],
           make_inputs: Callable[[dict], dict], encode: Callable[[K], dict],
           screen: Callable[[list], list] | None = None) -> dict[str, dict]:
    """The one schedule search: for each group key not yet cached, its representative case's
    candidates are compiled (all groups' at once, in parallel), timed on one set of inputs with
    the suite's timer, and the fastest is cached as `encode(candidate)`. A candidate that does not
    compile or run is named with its error (`log_failure`); `screen` may first turn runners into errors
    (e.g. a fast candidate whose output strays). Returns {key: cached choice}."""
    pending = {key: case for key, case in groups.items() if cache.get(key) is None}
    lists = {key: list(candidates(case)) for key, case in pending.items()}
    built = compile_all([lambda c=case, k=cand: compile_one(c, k)
                         for key, case in pending.items() for cand in lists[key]])
    chosen, at = {}, 0
    for key, case in pending.items():
        cands = lists[key]
        made, at = built[at:at + len(cands)], at + len(cands)
        inputs = make_inputs(case)
        try:
            runners = [m if isinstance(m, Exception) else _runner_or_error(runner, case, inputs, k, m)
                       for k, m in zip(cands, made)]
            runners = screen(runners) if screen else runners
            chosen[key] = encode(pick_fastest(cands, runners))
        finally:
            del inputs
            _free_device_memory()
        cache.put(key, chosen[key])
    return chosen


def _runner_or_error(runner, case, inputs, cand, made):
    try:
        return runner(case, inputs, cand, made)
    except Exception as exc:  # e.g. a launch plan the candidate cannot serve: not chosen, named
        return exc


def _free_device_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
