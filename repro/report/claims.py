"""The claims ledger: a verdict per claim, computed from measured rows by the rules in configs/claims.yaml.

Only rows with status "ok" count as evidence. Published ("reported") rows are third-party numbers
and never decide a verdict; missing results give `not measured` with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass

from repro.report.claim_parts import evaluate_part
from repro.report.load import Results
from repro.report.verdicts import NOT_MEASURED, PartResult, combine


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


def claim_verdict(parts: list[PartResult]) -> str:
    """Parts combined; but a claim about speed is `not measured` until some hardware part is measured,
    whatever line counts or builds say (they support a claim, they cannot carry it).
    Context parts (`decides: false`) are shown but never counted."""
    parts = [p for p in parts if p.decides]
    on_device = [p.verdict for p in parts if p.on_device]
    if not parts or (on_device and all(v == NOT_MEASURED for v in on_device)):
        return NOT_MEASURED
    return combine([p.verdict for p in parts])


def evaluate_claim(claim_id: str, rule: dict, results: Results, figures: dict, coverage: dict) -> ClaimResult:
    # The cards the claim names reach each part, which says when its rows come from another card.
    named = {"cards_named": rule["cards_named"]} if rule.get("cards_named") else {}
    parts = [evaluate_part({**named, **part}, results, figures, coverage) for part in rule.get("parts", [])]
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
