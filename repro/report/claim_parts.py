"""Checking one part of a claim: speedups on measured rows, code-line counts, builds, runs."""
from __future__ import annotations

import pandas as pd

from repro.report.claim_checks import builds_part, runs_part
from repro.report.claim_notes import as_list, card_lines, label_of, context_lines, coverage_lines, rule_text
from repro.report.environment import hardware_label
from repro.report.load import Results, select_rows, status_counts
from repro.measure.stats import geomean_interval, parse_trials
from repro.report.verdicts import (NOT_MEASURED, NOT_SUPPORTED, PARTLY, SUPPORTED, WITHIN_NOISE, PartResult, combine,
                                   grade, grade_interval, lower, statistic)


def filter_cases(rows: pd.DataFrame, where: str | None) -> pd.DataFrame:
    """Apply a pandas query over case parameters; a query naming a missing parameter selects nothing."""
    if not where or rows.empty:
        return rows
    try:
        return rows.query(where, engine="python")
    except (KeyError, NameError, pd.errors.UndefinedVariableError):
        return rows.iloc[0:0]


def best_rows(ok: pd.DataFrame, backends: list[str]) -> pd.DataFrame:
    """Per case, the fastest ok row among `backends` (a tie goes to the one listed first), with the
    backend that carried the case as `carrier`. A case one of them alone measured uses that one."""
    cand = ok[ok["backend"].isin(backends) & (ok["median_ms"] > 0)]
    rank = {b: i for i, b in enumerate(backends)}
    cand = cand.assign(_rank=cand["backend"].map(rank))
    best = cand.sort_values(["case", "median_ms", "_rank"], kind="mergesort").drop_duplicates("case", keep="first")
    return best.drop(columns="_rank").assign(carrier=best["backend"])


def subject_rows(rows: pd.DataFrame, backend: str, best_of: list[str] | None = None) -> pd.DataFrame:
    """The subject's ok rows, one per case: `backend`'s, or per case the fastest of `best_of`."""
    ok = rows[rows["status"] == "ok"]
    ok = ok if "trial_ms" in ok else ok.assign(trial_ms="")
    if best_of:
        return best_rows(ok, list(best_of))
    mine = ok[ok["backend"] == backend]
    return mine.assign(carrier=mine["backend"])


def pair_speedups(rows: pd.DataFrame, backend: str, baselines: list[str], best_of: list[str] | None = None):
    """(speedups per case, the baseline used, subject rows); speedup = baseline time / backend time.
    With `best_of`, the subject per case is the fastest of those backends (its name in `carrier`)."""
    ok = rows[rows["status"] == "ok"]
    ok = ok if "trial_ms" in ok else ok.assign(trial_ms="")
    cols = ["case", "median_ms", "run_id", "trial_ms"]
    subject = subject_rows(rows, backend, best_of)[cols + ["carrier"]]
    for baseline in baselines:
        base = ok[ok["backend"] == baseline][cols]
        if not base.empty:
            paired = subject.merge(base, on="case", suffixes=("", "_base")).dropna(subset=["median_ms"])
            paired = paired[(paired["median_ms"] > 0) & (paired["median_ms_base"] > 0)]
            paired["speedup"] = paired["median_ms_base"] / paired["median_ms"]
            return paired, baseline
    return subject.iloc[0:0].assign(speedup=[]), None


def carried_by(paired: pd.DataFrame, best_of: list[str]) -> str:
    """'tilelang 30 cases, tilelang_upstream 8 cases': which implementation carried how many cases."""
    counts = paired["carrier"].value_counts()
    return ", ".join(f"{b} {int(counts.get(b, 0))} case{'' if counts.get(b, 0) == 1 else 's'}" for b in best_of)


def _missing_reason(rows: pd.DataFrame, backend: str, baselines: list[str], hw: str,
                    best_of: list[str] | None = None) -> str:
    parts = []
    subjects = list(best_of) if best_of else [backend]
    for name in subjects + baselines:
        mine = rows[rows["backend"] == name]
        parts.append(f"{name}: {status_counts(mine)}")
    who = subjects[0] if len(subjects) == 1 else f"any of {', '.join(subjects)}"
    return f"{hw}: no case measured by both {who} and {' or '.join(baselines)} ({'; '.join(parts)})"


def _grouped(paired: pd.DataFrame, rows: pd.DataFrame, part: dict) -> tuple[list[str], list[str]]:
    """Per-group statistics: (groups meeting the `supported` threshold, one line per group)."""
    keys = [k for k in as_list(part.get("group_by")) if k in rows]
    if not keys or paired.empty:
        return [], []
    params = rows.drop_duplicates("case").set_index("case")[keys]
    joined = paired.join(params, on="case")
    holding, lines = [], []
    others = [b for b in as_list(part.get("best_of")) if b != part.get("backend", "tilelang")]
    for values, group in joined.groupby(keys, sort=True):
        value = statistic(group["speedup"], part.get("statistic", "geomean"))
        label = label_of(keys, values)
        carried = [f"{b} carries {n}" for b in others if (n := int((group["carrier"] == b).sum()))]
        lines.append(f"{label}: {value:.2f}x over {len(group)} cases" + (f" ({', '.join(carried)})" if carried else ""))
        if value >= float(part["supported"]):
            holding.append(label)
    return holding, lines


def _own_line(rows: pd.DataFrame, part: dict, used: str, stat_name: str) -> str:
    """Our kernel's own ratio, beside the best-of figure: '; tilelang alone: geomean 1.10x over 28 cases'."""
    backend = part.get("backend", "tilelang")
    own, _ = pair_speedups(rows, backend, [used])
    best, _ = pair_speedups(rows, backend, [used], as_list(part.get("best_of")))
    if not own.empty and (best["carrier"] == backend).all() and len(own) == len(best):
        return f"; {backend} alone: the same, as it carries every case"
    if own.empty:
        return f"; {backend} alone: no case measured ok beside {used}"
    return (f"; {backend} alone: {stat_name} {statistic(own['speedup'], stat_name):.2f}x over {len(own)} cases "
            f"(min {own['speedup'].min():.2f}x, max {own['speedup'].max():.2f}x)")


def _best_of_details(rows: pd.DataFrame, part: dict, best_of: list[str]) -> tuple[list[str], bool]:
    """Lines on the implementations that were not ok, and whether a case in scope has no correct
    TileLang implementation at all (an incorrect one and no ok one: that caps the verdict)."""
    backend = part.get("backend", "tilelang")
    lines, capped = [], False
    mine = rows[rows["backend"].isin(best_of)]
    for other in best_of:
        theirs = mine[mine["backend"] == other]
        rest = " and ".join(b for b in best_of if b != other)
        if not (theirs["status"] == "ok").any():
            counts = f" ({status_counts(theirs)})" if len(theirs) else ""
            lines.append(f"{other} has no measured rows here{counts}: {rest} carr"
                         f"{'ies' if len(best_of) == 2 else 'y'} every case")
        elif (theirs["status"] != "ok").any():
            lines.append(f"{other}: {status_counts(theirs)}; a case it did not measure ok is carried by another "
                         "implementation")
    wrong = mine[(mine["status"] == "incorrect") & (mine["backend"] != backend)]
    ok_cases = set(mine.loc[mine["status"] == "ok", "case"])
    unfixed = sorted(set(wrong["case"]) - ok_cases)
    if len(wrong):
        lines.append(f"{len(wrong)} {', '.join(sorted(set(wrong['backend'])))} cases fail the correctness gate and "
                     "are excluded" + (f"; {len(unfixed)} of them have no correct TileLang implementation"
                                       if unfixed else ""))
        capped = bool(unfixed)
    return lines, capped


def _speedup_on(rows: pd.DataFrame, hw: str, part: dict, coverage: dict) -> PartResult:
    backend, baselines = part.get("backend", "tilelang"), as_list(part.get("baseline"))
    best_of = as_list(part.get("best_of")) or None
    stat_name, threshold = part.get("statistic", "geomean"), float(part["supported"])
    paired, used = pair_speedups(rows, backend, baselines, best_of)
    if paired.empty:
        return PartResult(part["name"], NOT_MEASURED, "", [_missing_reason(rows, backend, baselines, hw, best_of)]
                          + coverage_lines(part, hw, coverage))
    value = statistic(paired["speedup"], stat_name)
    verdict = grade(value, threshold, part.get("partly"))
    interval = (geomean_interval([(parse_trials(b), parse_trials(x)) for b, x in
                                  zip(paired["trial_ms_base"], paired["trial_ms"])]) if stat_name == "geomean" else None)
    noise = grade_interval(*interval, threshold, part.get("partly")) if interval else None
    holding, group_lines = _grouped(paired, rows, part)
    # Groups only ever lower a verdict: a failing statistic stays failing however many groups hold.
    if group_lines and len(holding) < len(group_lines):
        verdict = lower(verdict, PARTLY)
    stand_in = used in as_list(part.get("stand_in"))
    ci = f" [95% interval {interval[0]:.2f}–{interval[1]:.2f}x]" if interval else ""
    who = (f", the faster of {' and '.join(best_of)} per case (carried by: {carried_by(paired, best_of)})"
           if best_of else "")
    numbers = (f"{hw}: {stat_name} {value:.2f}x{ci} vs {used}{' (a stand-in)' if stand_in else ''} over "
               f"{len(paired)} cases{who} (min {paired['speedup'].min():.2f}x, max {paired['speedup'].max():.2f}x; "
               f"needs ≥ {threshold:.2f}x)" + (_own_line(rows, part, used, stat_name) if best_of else ""))
    details = [rule_text(part, used)] + card_lines(part, hw)
    if noise:
        details.append(f"the 95% interval of the {stat_name}, {interval[0]:.2f}–{interval[1]:.2f}x from paired "
                       f"interleaved trials, straddles a threshold: {WITHIN_NOISE}, not {verdict}")
        verdict = noise
    for skipped in baselines[:baselines.index(used)]:
        mine = rows[rows["backend"] == skipped]
        details.append(f"baseline {skipped} has no measured rows here ({status_counts(mine)}), so {used} stands in")
    if stand_in:
        capped = verdict == SUPPORTED
        verdict = lower(verdict, PARTLY)
        details.append(f"measured against {used}, a stand-in for {baselines[0]}, not {baselines[0]} itself: "
                       f"a stand-in never makes this part supported on its own"
                       + (f" (its {value:.2f}x would be; capped at {PARTLY} until {baselines[0]} is measured)"
                          if capped else ""))
    if holding and verdict != SUPPORTED:
        details.append(f"holds for {', '.join(holding)}"
                       + (f" (beside an overall {verdict})" if verdict == NOT_SUPPORTED else ""))
    details += group_lines + context_lines(rows, part, hw) + coverage_lines(part, hw, coverage)
    if best_of:
        lines, capped = _best_of_details(rows, part, best_of)
        details += lines
        if capped:
            verdict = lower(verdict, PARTLY)
    wrong = rows[(rows["backend"] == backend) & (rows["status"] == "incorrect")]
    if len(wrong):
        details.append(f"{len(wrong)} {backend} cases fail the correctness gate and are excluded")
        verdict = lower(verdict, PARTLY)
    runs = sorted(set(paired["run_id"]) | set(paired["run_id_base"]))
    carriers = (f"; {carried_by(paired, best_of)}" if best_of and (paired["carrier"] != backend).any() else "")
    brief = (f"{value:.2f}x vs {used}{' (stand-in)' if stand_in else ''} ({stat_name} of {len(paired)}; "
             f"{paired['speedup'].min():.2f}–{paired['speedup'].max():.2f}x{carriers})")
    return PartResult(part["name"], verdict, numbers, details, runs, brief=brief)


def speedup_part(part: dict, results: Results, figures: dict, coverage: dict) -> PartResult:
    frame = results.rows(part["experiment"])
    wanted = as_list(part.get("hardware"))
    present = [hw for hw in wanted if not frame.empty and (frame["hardware"] == hw).any()]
    if not present:
        return PartResult(part["name"], NOT_MEASURED, "",
                          [f"no {part['experiment']} results on {' or '.join(wanted)}"])
    outcomes = []
    for hw in present:
        rows = filter_cases(frame[frame["hardware"] == hw], part.get("where"))
        outcome = _speedup_on(rows, hw, part, coverage)
        if outcome.verdict != NOT_MEASURED:
            outcome.details.insert(1, f"measured on {hardware_label(results, hw)}")
        manifests = [results.manifests[(hw, r)]["_path"] for r in outcome.evidence if (hw, r) in results.manifests]
        csv = sorted(set(frame.loc[frame["hardware"] == hw, "csv"]))
        outcome.evidence = csv + figures.get((part.get("figure", part["experiment"]), hw), []) + manifests
        outcomes.append(outcome)
    return PartResult(
        part["name"], combine([o.verdict for o in outcomes]),
        "; ".join(o.numbers for o in outcomes if o.numbers),
        [d for o in outcomes for d in o.details], [e for o in outcomes for e in o.evidence],
        brief="; ".join(f"{hw}: {o.brief}" if len(outcomes) > 1 else o.brief for hw, o in zip(present, outcomes)
                        if o.brief),
    )


def _counted(part: dict, results: Results, key: str, column: str = "code_lines") -> tuple[pd.DataFrame, str]:
    """Rows of loc.csv selected by `part[key]` that carry a count, or the reason there are none.
    `column` (e.g. kernel_code_lines: a builder without its scheduling and launch code) becomes
    code_lines where filled; the full count stays as all_code_lines."""
    loc = results.side.get("loc")
    if loc is None:
        return pd.DataFrame(), "results/loc.csv is absent"
    rows = select_rows(loc, part.get(key, {}))
    if rows.empty:
        return rows, f"no row of loc.csv matches {part.get(key)}"
    full = pd.to_numeric(rows.get("code_lines"), errors="coerce")
    counted = full
    if column != "code_lines" and column in rows:
        counted = pd.to_numeric(rows[column], errors="coerce").fillna(full)
    rows = rows.assign(all_code_lines=full)
    status = rows.get("status", pd.Series("ok", index=rows.index)).fillna("ok").astype(str)
    good = rows[counted.notna() & status.isin(["ok", "counted", ""])]
    if good.empty:
        return good, "matching loc.csv rows are not counted (" + status_counts(rows.assign(status=status)) + ")"
    return good.assign(code_lines=counted[good.index].astype(int)), ""


def _names(rows: pd.DataFrame) -> str:
    cols = [c for c in ("implementation", "function") if c in rows]
    glue = pd.to_numeric(rows.get("glue_code_lines", pd.Series(index=rows.index, dtype=float)), errors="coerce")
    full = rows.get("all_code_lines", rows["code_lines"])
    extra = rows.get("counted_with", pd.Series("", index=rows.index)).fillna("").astype(str)
    return ", ".join(
        " ".join(str(r[c]) for c in cols if str(r[c]) not in ("", "nan")) + f" = {r['code_lines']}"
        + (f" ({full[i]:.0f} with the scheduling and launch code it needs)" if full[i] != r["code_lines"]
           else f" (with {extra[i].replace(';', ', ')})" if extra[i] else "")
        + (f" (+{glue[i]:.0f} lines of host-side glue, not counted)" if glue[i] == glue[i] else "")
        for i, r in rows.sort_values(cols).iterrows()
    )


def loc_budget_part(part: dict, results: Results) -> PartResult:
    rows, why = _counted(part, results, "select", part.get("column", "code_lines"))
    evidence = ["results/loc.csv"] if "loc" in results.side else []
    evidence = sorted(set(results.side["loc"]["csv"])) if "loc" in results.side else evidence
    if rows.empty:
        return PartResult(part["name"], NOT_MEASURED, "", [why], evidence)
    if "budget_min" in part:
        value, ok = int(rows["code_lines"].min()), rows["code_lines"].min() >= part["budget_min"]
        rule = f"≥ {part['budget_min']}"
    else:
        value, ok = int(rows["code_lines"].max()), rows["code_lines"].max() <= part["budget"]
        rule = f"≤ {part['budget']}"
    numbers = f"{value} code lines (needs {rule}): {_names(rows)}"
    return PartResult(part["name"], SUPPORTED if ok else NOT_SUPPORTED, numbers, [], evidence,
                      brief=f"{value} code lines")


def loc_ratio_part(part: dict, results: Results) -> PartResult:
    mine, why_mine = _counted(part, results, "select")
    base, why_base = _counted(part, results, "baseline_select")
    evidence = sorted(set(results.side["loc"]["csv"])) if "loc" in results.side else []
    if mine.empty or base.empty:
        return PartResult(part["name"], NOT_MEASURED, "", [w for w in (why_mine, why_base) if w], evidence)
    # Conservative: the smallest baseline against the largest of ours.
    ratio = base["code_lines"].min() / max(1, mine["code_lines"].max())
    verdict = grade(ratio, float(part["supported"]), part.get("partly", 1.0))
    numbers = (f"{ratio:.2f}x fewer code lines (needs ≥ {float(part['supported']):.2f}x): "
               f"{_names(mine)} vs {_names(base)}")
    brief = f"{ratio:.2f}x fewer code lines ({int(mine['code_lines'].max())} vs {int(base['code_lines'].min())})"
    return PartResult(part["name"], verdict, numbers, [], evidence, brief=brief)


def evaluate_part(part: dict, results: Results, figures: dict, coverage: dict | None = None) -> PartResult:

    kind = part.get("kind")
    if kind == "speedup":
        return speedup_part(part, results, figures, coverage or {})
    if kind == "loc_budget":
        return loc_budget_part(part, results)
    if kind == "loc_ratio":
        return loc_ratio_part(part, results)
    if kind == "builds":
        return builds_part(part, results)
    if kind == "runs":
        return runs_part(part, results)
    raise ValueError(f"claim part {part.get('name')!r}: unknown kind {kind!r} "
                     "(speedup, loc_budget, loc_ratio, builds, runs)")
