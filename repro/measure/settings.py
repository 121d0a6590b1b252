"""The bench settings of a run: `configs/bench/*.yaml`, read once into frozen, typed dataclasses.

The values live only in the yaml; these classes hold no defaults, so a key missing from the
config, a key the code does not read, or a value of the wrong kind is refused when the settings
are built (a `SettingsError` naming `bench.<key>`), before any device work. A child process
receives them as plain JSON data (`to_dict`) and rebuilds them (`from_dict`).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional, Union


class SettingsError(ValueError):
    """A bench setting that is missing, unknown or out of range (the message names the key)."""


# The largest seed: what a results CSV's integer column holds (int64) and torch's generators take.
# Trial t of the gate draws its inputs from seed + t, so the seed leaves room for the trials.
MAX_SEED = 2**63 - 1


def _number(key: str, value: Any, *, positive: bool) -> float:
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if bad or value < 0 or (positive and value == 0):
        raise SettingsError(f"{key}={value!r}: must be a finite number {'> 0' if positive else '>= 0'}")
    return value


def _count(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SettingsError(f"{key}={value!r}: must be a positive integer")
    return value


def _seed(seed: Any, trials: int) -> None:
    """null, or an integer whose trials' seeds (seed .. seed + trials - 1) all fit in MAX_SEED."""
    if seed is None:
        return
    top = MAX_SEED - (trials - 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= top:
        raise SettingsError(f"bench.seed={seed!r}: null (fresh inputs every run) or an integer from 0 to {top} "
                            f"(2**63-1, less the {trials} correctness trials' offsets)")


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"{key}={value!r}: must be true or false")
    return value


def _exact_keys(prefix: str, cls, data: Mapping) -> None:
    names = [f.name for f in fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise SettingsError(f"{prefix}.{unknown[0]}: unknown setting; known: {', '.join(names)}")
    missing = [n for n in names if n not in data]
    if missing:
        raise SettingsError(f"{prefix}.{missing[0]}: missing (configs/bench/default.yaml sets every setting)")


@dataclass(frozen=True)
class TimerSettings:
    """What the timer (repro/measure/timer.py) needs: warm-up, sample budget, L2 flush, graphs."""

    warmup_ms: float
    rep_ms: float
    min_reps: int
    max_reps: int
    flush_l2: bool
    cuda_graph: bool

    def __post_init__(self):
        _number("bench.warmup_ms", self.warmup_ms, positive=False)
        _number("bench.rep_ms", self.rep_ms, positive=True)
        _count("bench.min_reps", self.min_reps)
        _count("bench.max_reps", self.max_reps)
        if self.max_reps < self.min_reps:
            raise SettingsError(f"bench.max_reps={self.max_reps} is below bench.min_reps={self.min_reps}")
        _flag("bench.flush_l2", self.flush_l2)
        _flag("bench.cuda_graph", self.cuda_graph)


@dataclass(frozen=True)
class Tolerance:
    """The gate's limits for one dtype: rel_l2 = ||out-ref||/||ref||, max_abs_rel = max|out-ref|/max|ref|."""

    rel_l2: float
    max_abs_rel: float

    @classmethod
    def from_dict(cls, dtype: str, data: Any) -> "Tolerance":
        if not isinstance(data, Mapping):
            raise SettingsError(f"bench.tolerance.{dtype}={data!r}: give {{rel_l2: ..., max_abs_rel: ...}}")
        _exact_keys(f"bench.tolerance.{dtype}", cls, data)
        for key in ("rel_l2", "max_abs_rel"):
            _number(f"bench.tolerance.{dtype}.{key}", data[key], positive=True)
        return cls(float(data["rel_l2"]), float(data["max_abs_rel"]))

    def as_mapping(self) -> dict:
        """The form the gate's compare() takes."""
        return {"rel_l2": self.rel_l2, "max_abs_rel": self.max_abs_rel}


@dataclass(frozen=True)
class BenchSettings:
    """Every key of the `bench` config section, one field each (plus the experiment's tolerances)."""

    warmup_ms: float
    rep_ms: float
    min_reps: int
    max_reps: int
    flush_l2: bool
    cuda_graph: bool
    correctness_trials: int
    trials: int  # timing trials per (case, backend), interleaved across a case's backends
    seed: Optional[int]  # None: the runner draws a fresh one per run (recorded in each row)
    isolate: Union[bool, str]  # true | false | "auto"
    timeout_s: float
    tolerance: Mapping[str, Tolerance]

    def __post_init__(self):
        _ = self.timer  # checks the timer's fields
        _count("bench.correctness_trials", self.correctness_trials)
        _count("bench.trials", self.trials)
        _seed(self.seed, self.correctness_trials)
        if self.isolate not in (True, False, "auto"):
            raise SettingsError(f"bench.isolate={self.isolate!r}: allowed values: true, false, auto")
        _number("bench.timeout_s", self.timeout_s, positive=True)
        for dtype, tol in self.tolerance.items():
            if not isinstance(tol, Tolerance):
                raise SettingsError(f"bench.tolerance.{dtype}: not a Tolerance")

    @property
    def timer(self) -> TimerSettings:
        return TimerSettings(self.warmup_ms, self.rep_ms, self.min_reps, self.max_reps, self.flush_l2, self.cuda_graph)

    @property
    def trial_timer(self) -> TimerSettings:
        """One of `trials` timing trials: the sample budget and repetition bounds shared out, so
        the pooled samples cost what one trial of the whole budget would."""
        n = self.trials
        low = -(-self.min_reps // n)  # pooled: at least min_reps, at most max_reps (when n <= min_reps)
        return TimerSettings(self.warmup_ms, self.rep_ms / n, low, max(low, self.max_reps // n),
                             self.flush_l2, self.cuda_graph)

    def tolerance_for(self, dtype: str) -> dict:
        if dtype not in self.tolerance:
            raise ValueError(f"no tolerance configured for dtype {dtype!r} (known: {', '.join(self.tolerance)})")
        return self.tolerance[dtype].as_mapping()

    def replace(self, **changes) -> "BenchSettings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Any) -> "BenchSettings":
        """From plain data: the bench section (as composed) or `to_dict`'s output."""
        if not isinstance(data, Mapping):
            raise SettingsError(f"bench={data!r}: must be a mapping of settings")
        _exact_keys("bench", cls, data)
        tolerance = data["tolerance"]
        if not isinstance(tolerance, Mapping) or not tolerance:
            raise SettingsError(f"bench.tolerance={tolerance!r}: one entry per dtype, e.g. fp16: {{rel_l2: ..., "
                                "max_abs_rel: ...}}")
        tol = {str(d): Tolerance.from_dict(str(d), t) for d, t in tolerance.items()}
        return cls(**{**data, "tolerance": tol})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "BenchSettings":
        return cls.from_dict(json.loads(text))
