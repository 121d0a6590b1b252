"""Portability parts of a claim: does each kernel build for a target, does it run on a device."""
from __future__ import annotations

import re

from repro.report.load import Results, status_counts
from repro.report.verdicts import NOT_MEASURED, NOT_SUPPORTED, PARTLY, SUPPORTED, PartResult

FAIL_STATUSES = ("error", "failed", "fail", "incorrect", "timeout", "oom")


def builds_part(part: dict, results: Results) -> PartResult:
    """Every kernel in results/portability.csv for the targets (and `kernels`, if given) must have a
    passing status. Statuses: compiled (code object made), lowered (device source only), run
    (compiled and measured on such a device), failed, not available. A part asking for `compiled`
    is not measured while every row is only lowered or not available: no evidence either way."""
    table = results.side.get("portability")
    name = part["name"]
    if table is None:
        return PartResult(name, NOT_MEASURED, "", ["results/portability.csv is absent"])
    evidence = sorted(set(table["csv"]))
    targets = table["target"].fillna("").astype(str)
    rows = table[targets.map(lambda t: any(re.search(p, t) for p in part["targets"])).astype(bool)]
    if part.get("kernels"):  # only the kernels matching one of these patterns
        names = rows["kernel"].fillna("").astype(str)
        rows = rows[names.map(lambda k: any(re.search(p, k) for p in part["kernels"])).astype(bool)]
    rows = rows.assign(status=rows["status"].fillna("").astype(str))
    if rows.empty:
        return PartResult(name, NOT_MEASURED, "", [f"no portability rows for targets {part['targets']}"
                                                    + (f", kernels {part['kernels']}" if part.get("kernels") else "")],
                          evidence)
    passing = rows["status"].isin(part.get("pass_status", ["ok"]))
    failing = rows["status"].isin(part.get("fail_status", FAIL_STATUSES))
    kernels = sorted(set(rows["kernel"].astype(str)))
    numbers = f"{int(passing.sum())} of {len(rows)} kernel builds pass ({status_counts(rows)})"
    details = []
    if "reason" in rows:
        # One line per (target, status, reason): the same refusal for seven kernels is said once.
        bad = rows[~passing].assign(reason=rows["reason"].fillna("").astype(str))
        for (target, status, reason), group in bad.groupby(["target", "status", "reason"], sort=True):
            names = sorted(set(group["kernel"].astype(str)))
            who = f"all {len(names)} kernels" if len(names) == len(kernels) and len(names) > 1 else ", ".join(names)
            details.append(f"{who} @ {target}: {status}" + (f" ({reason})" if reason else ""))
    if passing.all():
        verdict = SUPPORTED
    elif passing.any():
        verdict = PARTLY
    elif failing.any():
        verdict = NOT_SUPPORTED
    else:
        verdict = NOT_MEASURED  # the toolchain was not there to try: no evidence either way
    return PartResult(name, verdict, numbers + f"; kernels: {', '.join(kernels)}", details, evidence,
                      brief=f"{int(passing.sum())}/{len(rows)} builds pass")


def runs_part(part: dict, results: Results) -> PartResult:
    """Measured `ok` rows of the backend on the hardware, in any of the listed experiments."""
    wanted, backend = list(part.get("hardware", [])), part.get("backend", "tilelang")
    ran, failed, evidence = [], [], []
    for experiment in part.get("experiments", []):
        frame = results.rows(experiment)
        if frame.empty:
            continue
        mine = frame[frame["hardware"].isin(wanted) & (frame["backend"] == backend)]
        if mine.empty:
            continue
        evidence += sorted(set(mine["csv"]))
        ok = int((mine["status"] == "ok").sum())
        (ran if ok else failed).append(f"{experiment} ({ok} of {len(mine)} cases ok)")
    if not ran and not failed:
        return PartResult(part["name"], NOT_MEASURED, "", [f"no {backend} results on {' or '.join(wanted)}"])
    verdict = SUPPORTED if ran and not failed else (PARTLY if ran else NOT_SUPPORTED)
    return PartResult(part["name"], verdict, "; ".join(ran + failed), [], evidence,
                      brief=f"{len(ran)} of {len(ran) + len(failed)} experiments ran")
