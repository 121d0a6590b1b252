"""The words around a speedup verdict: the rule as applied, published context, planned cases not run."""
from __future__ import annotations

import pandas as pd

from repro.report.verdicts import statistic


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
    scope = f"the cases with `{part['where']}`" if part.get("where") else "all cases"
    text = (f"rule: {part.get('statistic', 'geomean')} of time({base}) / time({backend}) over {scope} "
            f"that both measured ok; supported ≥ {float(part['supported']):.2f}x")
    if part.get("partly") is not None:
        text += f", partly ≥ {float(part['partly']):.2f}x"
    if part.get("group_by"):
        text += (f"; per {', '.join(as_list(part['group_by']))} group too: only some groups reaching "
                 f"{float(part['supported']):.2f}x makes it partly")
    return text


def context_lines(rows: pd.DataFrame, part: dict) -> list[str]:
    """Subject's measured TFLOPS over a published (reported) backend's on the same cases: never decides."""
    other, backend = part.get("context_reported"), part.get("backend", "tilelang")
    if not other:
        return []
    mine = rows[(rows["status"] == "ok") & (rows["backend"] == backend)][["case", "tflops"]]
    theirs = rows[(rows["status"] == "reported") & (rows["backend"] == other)][["case", "tflops", "source"]]
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
