"""The verdict vocabulary and the arithmetic every claim part shares (no other report module is imported)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

SUPPORTED, PARTLY, NOT_SUPPORTED, NOT_MEASURED = "supported", "partly supported", "not supported", "not measured"
# The 95% interval of the statistic straddles a threshold: the measurement cannot tell.
WITHIN_NOISE = "within noise"
VERDICTS = (SUPPORTED, PARTLY, WITHIN_NOISE, NOT_SUPPORTED, NOT_MEASURED)


@dataclass
class PartResult:
    name: str
    verdict: str
    numbers: str  # the key figures, one line
    details: list[str] = field(default_factory=list)  # where it holds, what is missing
    evidence: list[str] = field(default_factory=list)  # paths relative to the results root's parent
    on_device: bool = False  # a measurement on hardware (speedup, runs), not a count or a build
    decides: bool = True  # False: shown for context, left out of the claim's verdict
    note: str = ""  # how the rule reads the claim (from claims.yaml)
    brief: str = ""  # the key number, a few words, for the README's summary


def combine(verdicts: list[str]) -> str:
    """All supported -> supported; none measured -> not measured; all measured fail -> not supported."""
    measured = [v for v in verdicts if v != NOT_MEASURED]
    if not measured:
        return NOT_MEASURED
    if len(measured) == len(verdicts) and all(v == SUPPORTED for v in measured):
        return SUPPORTED
    if all(v == NOT_SUPPORTED for v in measured):
        return NOT_SUPPORTED
    if len(measured) == len(verdicts) and all(v in (SUPPORTED, WITHIN_NOISE) for v in measured):
        return WITHIN_NOISE  # nothing fails, but not every part is shown beyond the noise
    return PARTLY


RANK = {NOT_SUPPORTED: 0, PARTLY: 1, SUPPORTED: 2}


def lower(verdict: str, cap: str) -> str:
    """The verdict, at most `cap` (a cap only ever lowers: `not supported` stays so; `not measured` too)."""
    if verdict not in RANK or cap not in RANK:
        return verdict
    return verdict if RANK[verdict] <= RANK[cap] else cap


def grade_interval(low: float, high: float, supported: float, partly: float | None) -> str | None:
    """WITHIN_NOISE when the interval [low, high] straddles a threshold, else None (grade the value)."""
    for threshold in (supported, partly):
        if threshold is not None and low < threshold <= high:
            return WITHIN_NOISE
    return None


def grade(value: float, supported: float, partly: float | None) -> str:
    if value >= supported:
        return SUPPORTED
    if partly is not None and value >= partly:
        return PARTLY
    return NOT_SUPPORTED


def statistic(values: pd.Series, name: str) -> float:
    if name == "geomean":
        return float(math.exp(values.map(math.log).mean()))
    if name in ("min", "median", "max", "mean"):
        return float(getattr(values, name)())
    raise ValueError(f"unknown statistic {name!r}: use geomean, min, median, max or mean")
