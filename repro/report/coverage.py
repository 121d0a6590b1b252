"""What a sweep planned against what the results hold: the cases and backends not measured.

The plan is the experiment's own case list from its config (`configs/experiment/<name>.yaml`,
composed as `python run.py experiment=<name> hardware=<hw>` would, without a device), so the
report names what is missing instead of silently drawing fewer points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from repro.report.load import Results
from repro.results.store import Status

MAX_LISTED = 6  # individual cases listed before "and N more"


@dataclass
class Coverage:
    experiment: str
    hardware: str
    planned: list[dict]  # every case of the sweep, as parameter dicts
    keys: list[str]  # their canonical case strings, same order
    backends: list[str]  # the sweep's backends
    run: set[str] = field(default_factory=set)  # case strings with any measured (non-reported) row

    @property
    def missing(self) -> list[dict]:
        return [c for c, k in zip(self.planned, self.keys) if k not in self.run]


def plan_cases(experiment: str, hardware: str, config_dir: Path):
    """(backends, cases) the sweep would run, or None when the config cannot be planned here."""
    try:
        from hydra import compose, initialize_config_dir

        from repro.measure.hardware import load_profile, profile_names
        from repro.run.plan import plan
        from repro.results.store import case_key

        if hardware not in profile_names():
            return None
        with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"experiment={experiment}", f"hardware={hardware}"])
        exp, backends, cases = plan(cfg)
        profile = load_profile(hardware)
        # Only backends that can exist on this hardware count as planned; untimed ones are references.
        backends = [b for b in backends if exp.backend(b).unavailable_on(profile) is None and exp.backend(b).timed]
        return backends, [dict(c) for c in cases], [case_key(c) for c in cases]
    except Exception:  # an unknown experiment, a config that needs a device: no plan, no claim of gaps
        return None


def coverage(results: Results, experiment: str, hardware: str, config_dir: Path) -> Coverage | None:
    planned = plan_cases(experiment, hardware, config_dir)
    if planned is None:
        return None
    from repro.results.store import parse_case
    from repro.results.store import case_key

    backends, cases, keys = planned
    rows = results.rows(experiment, hardware)
    measured = rows.loc[rows["status"] != Status.REPORTED, "case"] if not rows.empty else []
    run = {case_key(parse_case(c)) for c in measured}  # canonical: the file's key order may differ
    return Coverage(experiment, hardware, cases, keys, backends, run)


def all_coverage(results: Results, config_dir: Path) -> dict[tuple[str, str], Coverage]:
    found = {}
    for name in sorted(results.experiments):
        for hw in sorted(results.rows(name)["hardware"].unique()):
            if (cov := coverage(results, name, hw, config_dir)) is not None:
                found[(name, hw)] = cov
    return found


def short(value) -> str:
    """4096 -> 4k; booleans and text as written."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if value >= 1024 and value % 1024 == 0:
        return f"{value / 1024:g}k"
    return f"{value:g}"


def _values(cases: list[dict], key: str) -> list:
    return sorted({c.get(key) for c in cases}, key=lambda v: (str(type(v)), v))


def _independent(planned: list[dict], prefer: list[str]) -> list[str]:
    """Varying parameters, one per set that moves together (batch with seq_q): `prefer`red first."""
    varying = [k for k in planned[0] if len(_values(planned, k)) > 1]
    varying.sort(key=lambda k: prefer.index(k) if k in prefer else len(prefer))
    kept, seen = [], set()
    for key in varying:
        partition = frozenset(frozenset(i for i, c in enumerate(planned) if c.get(key) == v)
                              for v in _values(planned, key))
        if partition not in seen:
            seen.add(partition)
            kept.append(key)
    return kept


def _cases(n: int) -> str:
    return f"{n} case" + ("" if n == 1 else "s")


def _leaf(planned: list[dict], missing: list[dict], prefer: list[str]) -> str:
    """The missing cases of one group: a product of values where they form one, else a list."""
    params = _independent(planned, prefer)
    if not params:
        return _cases(len(missing))
    spans = [(k, _values(missing, k)) for k in params]
    if len(missing) == math.prod(len(v) for _, v in spans):
        return ", ".join(f"{k}={short(v[0])}" if len(v) == 1 else f"{k} ∈ {{{', '.join(map(short, v))}}}"
                         for k, v in spans) + f" ({_cases(len(missing))})"
    listed = [" ".join(f"{k}={short(c[k])}" for k in params) for c in missing[:MAX_LISTED]]
    more = f"; and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
    return "; ".join(listed) + more


def describe(planned: list[dict], missing: list[dict], order: list[str], prefer: list[str] = (),
             prefix: str = "") -> list[str]:
    """Lines naming the missing cases: split by `order` keys, whole groups said once."""
    if not missing:
        return []
    head = f"{prefix}: " if prefix else ""
    if len(missing) == len(planned):
        return [f"{head}all planned ({_cases(len(planned))})"]
    split = [k for k in order if len(_values(planned, k)) > 1]
    if not split:
        return [head + _leaf(planned, missing, list(prefer))]
    key, rest = split[0], split[1:]
    lines = []
    for value in _values(planned, key):
        label = f"{prefix + ', ' if prefix else ''}{key}={short(value)}"
        lines += describe([c for c in planned if c.get(key) == value],
                          [c for c in missing if c.get(key) == value], rest, prefer, label)
    return lines


def missing_lines(cov: Coverage, order: list[str], prefer: list[str] = (),
                  where: str | None = None) -> tuple[int, int, list[str]]:
    """(planned, run, lines) for the cases in scope (`where`, a pandas query over parameters)."""
    planned = cov.planned
    if where and planned:
        frame = pd.DataFrame(planned)
        try:
            keep = set(frame.query(where, engine="python").index)
        except Exception:
            keep = set(range(len(planned)))
        planned = [c for i, c in enumerate(planned) if i in keep]
    from repro.results.store import case_key

    missing = [c for c in planned if case_key(c) not in cov.run]
    return len(planned), len(planned) - len(missing), describe(planned, missing, order, prefer)


def backend_gaps(results: Results, cov: Coverage) -> list[str]:
    """Per planned backend without a measurement in every run case: why, from the rows."""
    from repro.results.store import parse_case
    from repro.results.store import case_key

    rows = results.rows(cov.experiment, cov.hardware)
    rows = rows[rows["status"] != Status.REPORTED] if not rows.empty else rows
    lines = []
    for backend in cov.backends:
        mine = rows[rows["backend"] == backend] if not rows.empty else rows
        if mine.empty:
            lines.append(f"{backend}: no rows at all")
            continue
        bad = mine[mine["status"] != Status.OK]
        for status, group in bad.groupby("status", sort=True):
            reasons = sorted(set(group["error"].astype(str)) - {""})
            why = f" ({'; '.join(reasons)})" if reasons else ""
            lines.append(f"{backend}: {status} in {_cases(len(group))}{why}")
        absent = sorted(cov.run - {case_key(parse_case(c)) for c in mine["case"]})
        if absent:
            lines.append(f"{backend}: no row for {len(absent)} of the {len(cov.run)} run cases ("
                         + "; ".join(a.replace(",", ", ") for a in absent[:MAX_LISTED]) + ")")
    return lines
