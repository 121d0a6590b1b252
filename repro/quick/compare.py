"""A quick record as a scoreboard: per case, ours over its baseline with a 95% interval, and the
change against the previous record of the same card, regressions marked. A change between two
records of the same code (same code hash) is the card's run-to-run spread: shown, never marked;
so is a fall of the ratio while our own time held (the baseline got faster, not our kernel slower).
Pure functions of rows."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from repro.measure.stats import case_interval, parse_trials
from repro.quick.plan import QuickEntry

REGRESSION = "REGRESSION"


@dataclass(frozen=True)
class Ratio:
    value: float
    lo: float = math.nan
    hi: float = math.nan

    def text(self) -> str:
        if math.isnan(self.value):
            return "-"
        if math.isnan(self.lo):
            return f"{self.value:.2f}x"
        return f"{self.value:.2f}x [{self.lo:.2f}, {self.hi:.2f}]"


@dataclass(frozen=True)
class Score:
    kernel: str
    case: str  # the experiment's case, without `kernel=`
    off_grid: bool
    ours: str  # figure or status of our kernel
    schedule: str
    baseline: str  # the baseline the ratio is against, or why there is none
    base_figure: str
    ratio: Ratio
    upstream: Ratio  # TileLang's published kernel over the same baseline
    previous: Ratio
    change: str
    regression: bool


def _ok(row: Optional[Mapping]) -> bool:
    return row is not None and str(row.get("status")) == "ok" and _num(row.get("median_ms")) is not None


def _num(value) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def figure(row: Optional[Mapping]) -> str:
    """TFLOPS, else GB/s, else the median time; a row that did not run: its status."""
    if row is None:
        return "not run"
    if not _ok(row):
        return str(row.get("status"))
    for column, unit, fmt in (("tflops", "TFLOPS", "{:.3g}"), ("gbps", "GB/s", "{:.3g}"), ("median_ms", "ms", "{:.3g}")):
        value = _num(row.get(column))
        if value is not None:
            return f"{fmt.format(value)} {unit}"
    return "ok"


def ratio_of(row: Optional[Mapping], base: Optional[Mapping]) -> Ratio:
    """row's speed over base's: from their paired trials (with an interval), else their medians."""
    if not (_ok(row) and _ok(base)):
        return Ratio(math.nan)
    trials, base_trials = parse_trials(row.get("trial_ms")), parse_trials(base.get("trial_ms"))
    if trials and base_trials:
        return Ratio(*case_interval(base_trials, trials))
    return Ratio(_num(base["median_ms"]) / _num(row["median_ms"]))


def chosen_baseline(entry: QuickEntry, rows: Mapping[str, Mapping]) -> Optional[str]:
    """The first of the entry's baselines (in order of preference) with an ok row."""
    return next((b for b in entry.baselines if _ok(rows.get(b))), None)


def regressed(new: Ratio, old: Ratio, min_drop: float) -> bool:
    """A fall of more than min_drop (relative) and more than the intervals: the new interval's top
    below the old one's bottom (or below the old point when either has no interval)."""
    if math.isnan(new.value) or math.isnan(old.value) or new.value >= old.value * (1 - min_drop):
        return False
    top = new.value if math.isnan(new.hi) else new.hi
    bottom = old.value if math.isnan(old.lo) else old.lo
    return top < bottom


def _by_case(rows: Iterable[Mapping]) -> dict[str, dict[str, Mapping]]:
    out: dict[str, dict[str, Mapping]] = {}
    for row in rows:
        out.setdefault(str(row["case"]), {})[str(row["backend"])] = row
    return out


def score(entries: list[QuickEntry], rows: Iterable[Mapping], previous: Iterable[Mapping] = (),
          min_drop: float = 0.05) -> list[Score]:
    """One Score per planned case, in the plan's order; `previous` is the earlier record (may be empty)."""
    now, before = _by_case(rows), _by_case(previous)
    out = []
    for entry in entries:
        for qc in entry.cases:
            cur, old = now.get(qc.key, {}), before.get(qc.key, {})
            ours = cur.get(entry.ours)
            base = chosen_baseline(entry, cur)
            ratio = ratio_of(ours, cur.get(base)) if base else Ratio(math.nan)
            upstream = ratio_of(cur.get(entry.upstream), cur.get(base)) if (base and entry.upstream) else Ratio(math.nan)
            prev = ratio_of(old.get(entry.ours), old.get(base)) if base else Ratio(math.nan)
            change, bad = _change(ratio, prev, old.get(entry.ours), ours, min_drop)
            missing = "; ".join(f"{b} {_status(cur.get(b))}" for b in entry.baselines)
            out.append(Score(entry.kernel, _case_text(qc.case), qc.off_grid, figure(ours),
                             str((ours or {}).get("schedule") or "-"), base or f"none ({missing})",
                             figure(cur.get(base)) if base else "-", ratio, upstream, prev, change, bad))
    return out


def _status(row: Optional[Mapping]) -> str:
    return "not run" if row is None else str(row.get("status"))


def _change(new: Ratio, old: Ratio, old_row, new_row, min_drop: float) -> tuple[str, bool]:
    if _ok(old_row) and not _ok(new_row):
        return f"was ok, now {_status(new_row)} {REGRESSION}", True
    if math.isnan(old.value):
        return "new", False
    if math.isnan(new.value):
        return "-", False
    text = f"{(new.value / old.value - 1) * 100:+.0f}%"
    if _same_code(old_row, new_row):  # the card's run-to-run spread, not a change of ours
        return f"{text} (same code)", False
    bad = regressed(new, old, min_drop)
    if bad and not _slower(old_row, new_row, min_drop):
        return f"{text} (baseline faster; ours {_time_change(old_row, new_row)})", False
    return (f"{text} {REGRESSION}" if bad else text), bad


def _slower(old_row, new_row, min_drop: float) -> bool:
    """Our own median time rose by more than min_drop against the previous record."""
    old, new = _num(old_row.get("median_ms")), _num(new_row.get("median_ms"))
    return old is None or new is None or new > old * (1 + min_drop)


def _time_change(old_row, new_row) -> str:
    return f"{(_num(old_row['median_ms']) / _num(new_row['median_ms']) - 1) * 100:+.0f}%"


def _same_code(old_row, new_row) -> bool:
    """Both records name the same code hash (the experiment's import closure: kernel, harness)."""
    old, new = ((row or {}).get("code_hash") for row in (old_row, new_row))
    return isinstance(old, str) and bool(old) and old == new


def _case_text(case: Mapping) -> str:
    return ",".join(f"{k}={v}" for k, v in case.items() if k != "dtype") + f" {case.get('dtype', '')}".rstrip()


def table(scores: list[Score]) -> str:
    """The scoreboard as a Markdown table."""
    head = ("| kernel | case | schedule | ours | baseline | ours / baseline [95%] | TileLang example / baseline "
            "| vs previous record |")
    lines = [head, "|" + " --- |" * 8]
    for s in scores:
        case = s.case + (" (off grid)" if s.off_grid else "")
        base = f"{s.baseline} {s.base_figure}" if s.base_figure != "-" else s.baseline
        lines.append(f"| {s.kernel} | {case} | {s.schedule} | {s.ours} | {base} | {s.ratio.text()} | "
                     f"{s.upstream.text()} | {s.change} |")
    return "\n".join(lines)
