"""Confidence in a ratio of two backends' times, from trials that were interleaved (A B A B ...).

Each trial of a (case, backend) is a median over its own repetitions; trial t of two backends of
one case ran next to each other, so their ratio is paired and drift of the machine between trials
cancels. Per case the log-ratios' mean and standard error give a Student-t interval; a geomean
over cases pools them (the cases are independent). One trial gives a point and no interval.
"""
from __future__ import annotations

import math
from statistics import mean, stdev
from typing import Optional, Sequence

# Two-sided 95% Student-t quantiles by degrees of freedom (1..30); beyond, the normal's.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042)


def t95(dof: int) -> float:
    return _T95[dof - 1] if 1 <= dof <= len(_T95) else 1.960


def parse_trials(text) -> list[float]:
    """The `trial_ms` column ("0.51;0.52;0.50") as floats; empty or missing -> []."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return []
    return [float(x) for x in str(text).split(";") if x.strip()]


def join_trials(values: Sequence[float]) -> str:
    return ";".join(f"{v:.6g}" for v in values)


def log_ratios(base_ms: Sequence[float], ms: Sequence[float]) -> list[float]:
    """log(base/x) per paired trial: > 0 where x is faster than the base."""
    n = min(len(base_ms), len(ms))
    return [math.log(base_ms[i] / ms[i]) for i in range(n) if base_ms[i] > 0 and ms[i] > 0]


def case_interval(base_ms: Sequence[float], ms: Sequence[float]) -> tuple[float, float, float]:
    """(speedup, low, high) of x over the base for one case; low/high NaN with fewer than 2 trials."""
    logs = log_ratios(base_ms, ms)
    if not logs:
        return math.nan, math.nan, math.nan
    centre = mean(logs)
    if len(logs) < 2:
        return math.exp(centre), math.nan, math.nan
    half = t95(len(logs) - 1) * stdev(logs) / math.sqrt(len(logs))
    return math.exp(centre), math.exp(centre - half), math.exp(centre + half)


def geomean_interval(pairs: Sequence[tuple[Sequence[float], Sequence[float]]]) -> Optional[tuple[float, float]]:
    """The 95% interval of the geomean speedup over cases, each given as (base trials, x trials);
    None unless every case has at least two paired trials."""
    logs = [log_ratios(b, x) for b, x in pairs]
    if not logs or any(len(v) < 2 for v in logs):
        return None
    n = len(logs)
    centre = sum(mean(v) for v in logs) / n
    var = sum(stdev(v) ** 2 / len(v) for v in logs) / n ** 2
    dof = min(len(v) for v in logs) - 1
    half = t95(dof) * math.sqrt(var)
    return math.exp(centre - half), math.exp(centre + half)
