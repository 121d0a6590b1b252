"""The verdict vocabulary and the arithmetic every claim part shares (no other report module is imported)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

SUPPORTED, PARTLY, NOT_SUPPORTED, NOT_MEASURED = "supported", "partly supported", "not supported", "not measured"
VERDICTS = (SUPPORTED, PARTLY, NOT_SUPPORTED, NOT_MEASURED)


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
    return PARTLY


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
