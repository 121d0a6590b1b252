"""The words around a speedup verdict: the rule as applied, published context, planned cases not run."""
from __future__ import annotations

import functools
import re
from pathlib import Path

import pandas as pd
import yaml

from repro.report.verdicts import statistic
from repro.results.store import PUBLISHED_SUFFIX  # a published figure's backend: fa2 -> fa2_paper

HARDWARE_DIR = Path(__file__).resolve().parents[2] / "configs" / "hardware"
# Cards a published figure's `source` may name, as results folder names (`910B` is an Ascend).
CARD_PATTERN = re.compile(r"(?i)\b(H100|H200|H800|H20|A100|A800|B200|GB200|MI300X|MI325X|MI250X?|910B)\b")


def as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def label_of(keys: list[str], values) -> str:
    values = values if isinstance(values, tuple) else (values,)
    return " ".join(f"{k}={v}" for k, v in zip(keys, values))


def rule_text(part: dict, used: str | None) -> str:
    """The rule in words, as applied: cases, statistic, thresholds, grouping."""
    backend, base = part.get("backend", "tilelang"), used or " or ".join(as_list(part.get("baseline")))
    best_of = as_list(part.get("best_of"))
    subject = f"the faster of {', '.join(best_of)}" if best_of else backend
    scope = f"the cases with `{part['where']}`" if part.get("where") else "all cases"
    text = (f"rule: {part.get('statistic', 'geomean')} of time({base}) / time({subject}) over {scope} "
            f"that both measured ok; supported ≥ {float(part['supported']):.2f}x")
    if part.get("partly") is not None:
        text += f", partly ≥ {float(part['partly']):.2f}x"
    if part.get("group_by"):
        text += (f"; per {', '.join(as_list(part['group_by']))} group too: a group short of "
                 f"{float(part['supported']):.2f}x lowers a supported verdict to partly, and groups that "
                 "hold never lift a failing one")
    if best_of:
        text += (f"; the claim is about TileLang, not this suite's kernel: per case the faster of the ok rows of "
                 f"{' and '.join(best_of)} (the suite's kernel and TileLang's published example) is the TileLang "
                 f"time, the verdict is graded on that best-of statistic, and {backend}'s own ratio is given beside it")
    if part.get("stand_in"):
        text += f"; {', '.join(as_list(part['stand_in']))} only stands in: at most partly on its own"
    return text


def source_cards(source: str) -> set[str]:
    """The cards a published figure's source names, as results folder names ('H800 SXM5' -> {'h800'})."""
    return {("ascend" + c.lower()) if c.upper() == "910B" else c.lower() for c in CARD_PATTERN.findall(str(source))}


def same_card(source: str, hardware: str) -> bool:
    """Whether a published figure was made on this card: its source must name it (no card named: no)."""
    return hardware.lower() in source_cards(source)


@functools.lru_cache(maxsize=None)
def hardware_profile(hardware: str) -> dict:
    path = HARDWARE_DIR / f"{hardware}.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _versus(hw: str, named: str) -> str:
    """'the same compute peaks, 1.43x the memory bandwidth (4.8 vs 3.35 TB/s)' from the datasheet profiles."""
    mine, theirs = hardware_profile(hw), hardware_profile(named)
    if not (mine.get("hbm_tbps") and theirs.get("hbm_tbps")):
        return "no datasheet profile to compare them"
    compute = "the same compute peaks" if mine.get("peak_tflops") == theirs.get("peak_tflops") else \
        "different compute peaks"
    return (f"{compute}, {mine['hbm_tbps'] / theirs['hbm_tbps']:.2f}x the memory bandwidth "
            f"({mine['hbm_tbps']:g} vs {theirs['hbm_tbps']:g} TB/s)")


def card_lines(part: dict, hw: str) -> list[str]:
    """Where the claim names another card than the rows come from: say so, and whether it matters."""
    named = [c for c in as_list(part.get("cards_named")) if c]
    if not named or hw in named:
        return []
    line = (f"the claim names the {'/'.join(c.upper() for c in named)}; these rows are from the {hw.upper()} "
            f"({_versus(hw, named[0])})")
    if part.get("memory_bound"):
        line += (": this part is memory-bound, so the substitution matters (the faster memory can move the "
                 f"ratio either way; a run on the {named[0].upper()} is needed to settle the claim as stated)")
    else:
        line += ": this part is compute-bound, where the substitution matters little"
    return [line]


def context_lines(rows: pd.DataFrame, part: dict, hw: str | None = None) -> list[str]:
    """Subject's measured TFLOPS over a published (reported) backend's on the same cases and the same
    card (a figure published for another card is named, never compared): never decides."""
    other, backend = part.get("context_reported"), part.get("backend", "tilelang")
    if not other:
        return []
    mine = rows[(rows["status"] == "ok") & (rows["backend"] == backend)][["case", "tflops"]]
    # Published figures are stored under a name of their own (`fa2_paper` beside a measured `fa2`).
    published = rows["backend"].isin([other, f"{other}{PUBLISHED_SUFFIX}"])
    theirs = rows[(rows["status"] == "reported") & published][["case", "tflops", "source"]]
    if hw is not None:
        elsewhere = theirs[~theirs["source"].astype(str).map(lambda s: same_card(s, hw)).astype(bool)]
        theirs = theirs.drop(elsewhere.index)
        if theirs.empty and not elsewhere.empty:
            return [f"context: {other}'s published numbers are for another card "
                    f"({'; '.join(sorted(set(elsewhere['source'].astype(str))))}), not compared with {hw} rows"]
    both = mine.merge(theirs, on="case", suffixes=("", "_rep")).dropna(subset=["tflops", "tflops_rep"])
    if both.empty:
        return [f"context: no published {other} numbers on the measured cases"]
    both = both.assign(speedup=both["tflops"] / both["tflops_rep"])
    keys = [k for k in as_list(part.get("group_by")) if k in rows]
    groups = []
    if keys:
        joined = both.join(rows.drop_duplicates("case").set_index("case")[keys], on="case")
        groups = [f"{label_of(keys, v)}: {statistic(g['speedup'], 'geomean'):.2f}x"
                  for v, g in joined.groupby(keys, sort=True)]
    source = "; ".join(sorted(set(both["source"].astype(str)) - {""})) or "source not recorded"
    return [f"context, not deciding: {backend}'s measured TFLOPS / {other}'s published TFLOPS ({source}): "
            f"geomean {statistic(both['speedup'], 'geomean'):.2f}x over {len(both)} cases"
            + (f" ({'; '.join(groups)})" if groups else "")]


def coverage_lines(part: dict, hw: str, coverage: dict) -> list[str]:
    """The planned cases in the part's scope that were never run on this hardware."""
    from repro.report.coverage import missing_lines

    found = coverage.get((part["experiment"], hw))
    if found is None:
        return []
    cov, spec = found
    planned, run, lines = missing_lines(cov, spec.get("coverage_by", []), spec.get("coverage_prefer", []),
                                        part.get("where"))
    if not lines:
        return [f"coverage: all {planned} planned cases in scope were run"]
    return [f"coverage: {run} of {planned} planned cases in scope were run; not run: " + "; ".join(lines)]
