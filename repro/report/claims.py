"""The claims ledger: a verdict per claim, computed from measured rows by the rules in configs/claims.yaml.

Only rows with status "ok" count as evidence. Published ("reported") rows are third-party numbers
and never decide a verdict; missing results give `not measured` with the reason.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pandas as pd

from repro.report.load import Results

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


@dataclass
class ClaimResult:
    id: str
    statement: str
    source: str
    hardware_named: str
    verdict: str
    parts: list[PartResult]
    note: str = ""  # why the claim is read as it is, or why it cannot be measured (from claims.yaml)

    @property
    def where(self) -> str:
        """One line saying which parts hold, for `partly supported` and the summary table."""
        return "; ".join(f"{p.name}: {p.verdict}" + ("" if p.decides else " (context)") for p in self.parts)


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


def claim_verdict(parts: list[PartResult]) -> str:
    """Parts combined; but a claim about speed is `not measured` until some hardware part is measured,
    whatever line counts or builds say (they support a claim, they cannot carry it).
    Context parts (`decides: false`) are shown but never counted."""
    parts = [p for p in parts if p.decides]
    on_device = [p.verdict for p in parts if p.on_device]
    if not parts or (on_device and all(v == NOT_MEASURED for v in on_device)):
        return NOT_MEASURED
    return combine([p.verdict for p in parts])


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


def status_counts(rows: pd.DataFrame) -> str:
    counts = rows["status"].value_counts().sort_index()
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or "no rows"


def select_rows(frame: pd.DataFrame, patterns: dict) -> pd.DataFrame:
    """Rows whose columns match every regex in `patterns` (a missing column matches nothing)."""
    mask = pd.Series(True, index=frame.index)
    for column, pattern in sorted(patterns.items()):
        if column not in frame:
            return frame.iloc[0:0]
        mask &= frame[column].fillna("").astype(str).map(lambda text: re.search(pattern, text) is not None)
    return frame[mask]


def evaluate_claim(claim_id: str, rule: dict, results: Results, figures: dict, coverage: dict) -> ClaimResult:
    from repro.report.claim_parts import evaluate_part  # one module per job: parts live there

    parts = [evaluate_part(part, results, figures, coverage) for part in rule.get("parts", [])]
    for part, spec in zip(parts, rule.get("parts", [])):
        part.on_device = spec.get("kind") in ("speedup", "runs")
        part.decides = bool(spec.get("decides", True))
        part.note = " ".join(str(spec.get("note", "")).split())
    return ClaimResult(
        id=claim_id,
        statement=str(rule.get("statement", "")),
        source=str(rule.get("source", "")),
        hardware_named=str(rule.get("hardware_named", "")),
        verdict=claim_verdict(parts),
        parts=parts,
        note=" ".join(str(rule.get("note", "")).split()),
    )


def evaluate(rules: dict, results: Results, figures: dict | None = None,
             coverage: dict | None = None) -> list[ClaimResult]:
    """Every claim in `rules["claims"]`, in id order. `coverage`: (experiment, hardware) -> (Coverage,
    report spec), to name the planned cases a part could not use."""
    claims = rules.get("claims", {})
    return [evaluate_claim(cid, claims[cid], results, figures or {}, coverage or {}) for cid in sorted(claims)]
