"""`python -m repro.quick`: the quick scoreboard (configs/quick.yaml), in a few minutes on one GPU.

    python -m repro.quick                       # measure, store results/<card>/quick.csv, print the table
    python -m repro.quick --only mla_decode     # some kernels (their earlier rows stay)
    python -m repro.quick --fail-on-regression  # exit 5 when a ratio fell against the previous record
    python -m repro.quick --table               # the table of the stored record, nothing measured
    python -m repro.quick --selftest            # the same path on the CPU (the harness self-test)

The previous record is the card's quick.csv as last committed (git; with --table, the last
committed record other than the one shown, or --against REV), else as it was before this run;
--previous names a file instead. Exit codes: 0 done; 2 a bad option or quick.yaml; 3 no usable
device; 4 a damaged results file; 5 a regression with --fail-on-regression.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXIT_CONFIG, EXIT_NO_DEVICE, EXIT_STORE, EXIT_REGRESSION = 2, 3, 4, 5
ROOT = Path(__file__).resolve().parents[2]
SELFTEST_RESULTS = "outputs/quick-selftest"  # never the real record


def _error(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m repro.quick", description=__doc__.splitlines()[0])
    p.add_argument("--results", default=None, help="results folder (default results/; the self-test: "
                   f"{SELFTEST_RESULTS})")
    p.add_argument("--only", default="", help="comma-separated kernels of configs/quick.yaml")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 5 when any case regressed")
    p.add_argument("--table", action="store_true", help="print the stored record's table; measure nothing")
    p.add_argument("--card", default=None, help="with --table: the card folder (default: the only one with a quick.csv)")
    p.add_argument("--against", default=None, help="git revision of the previous record (default: the last "
                   "committed record other than the one in the working tree)")
    p.add_argument("--previous", default=None, help="a quick.csv to compare against instead of git's")
    p.add_argument("--selftest", action="store_true", help="the CPU self-test through the same path")
    p.add_argument("--run-id", default=None)
    return p.parse_args(argv)


def read_rows(path: Path) -> list[dict]:
    from repro.results.store import read_results

    if not path.exists():
        return []
    return read_results(path).to_dict("records")


def committed_rows(path: Path, rev: str) -> list[dict] | None:
    """The rows of `path` at git revision `rev`; None when git has no such file there."""
    try:
        rel = path.resolve().relative_to(ROOT)
        text = subprocess.run(["git", "show", f"{rev}:{rel.as_posix()}"], cwd=ROOT, capture_output=True,
                              timeout=20, check=True).stdout
    except (ValueError, OSError, subprocess.SubprocessError):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "quick.csv"
        copy.write_bytes(text)
        return read_rows(copy)


def previous_revision(path: Path) -> str:
    """The commit holding the record before the one in the working tree: HEAD when the file has
    changed since (a new record not yet committed), else the commit before the file's last change."""
    try:
        rel = path.resolve().relative_to(ROOT).as_posix()
        changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", rel], cwd=ROOT, timeout=20).returncode
        if changed:
            return "HEAD"
        log = subprocess.run(["git", "log", "-n", "2", "--format=%H", "--", rel], cwd=ROOT, capture_output=True,
                             text=True, timeout=20, check=True).stdout.split()
    except (ValueError, OSError, subprocess.SubprocessError):
        return "HEAD"
    return log[1] if len(log) > 1 else f"{log[0]}~1" if log else "HEAD"


def _card_folder(results: Path, card: str | None) -> Path:
    if card:
        return results / card
    found = sorted(p.parent for p in results.glob("*/quick.csv"))
    if len(found) != 1:
        raise ValueError(f"{len(found)} quick records under {results.as_posix()}: name one with --card "
                         f"({', '.join(p.name for p in found) or 'none'})")
    return found[0]


def show(entries, rows, previous, min_drop: float) -> bool:
    from repro.quick.compare import score, table

    scores = score(entries, rows, previous, min_drop)
    print(table(scores))
    bad = [s for s in scores if s.regression]
    for s in bad:
        print(f"REGRESSION: {s.kernel} {s.case}: {s.change}", file=sys.stderr)
    return bool(bad)


def main(argv=None) -> int:
    from repro.quick import plan as qp
    from repro.quick.measure import QUICK, estimate, run_entries
    from repro.results.store import StoreError

    args = parse_args(argv if argv is not None else sys.argv[1:])
    results = Path(args.results or (SELFTEST_RESULTS if args.selftest else "results"))
    try:
        entries = qp.load_plan(selftest=args.selftest, only=[k for k in args.only.split(",") if k])
        knobs = qp.settings()
    except qp.QuickConfigError as exc:
        return _error(str(exc), EXIT_CONFIG)
    try:
        if args.table:
            folder = _card_folder(results, args.card)
            path = folder / f"{QUICK}.csv"
            previous = (read_rows(Path(args.previous)) if args.previous else
                        committed_rows(path, args.against or previous_revision(path)) or [])
            regressed = show(entries, read_rows(path), previous, knobs["min_drop"])
            return EXIT_REGRESSION if regressed and args.fail_on_regression else 0
        return _measure(args, entries, knobs, results, run_entries, estimate)
    except ValueError as exc:
        return _error(str(exc), EXIT_CONFIG)
    except StoreError as exc:
        return _error(str(exc), EXIT_STORE)


def _measure(args, entries, knobs, results: Path, run_entries, estimate) -> int:
    from repro.measure.hardware import HardwareError
    from repro.run.runner import new_run_id
    from repro.run.validate import ConfigError

    total = sum(len(e.cases) for e in entries)
    _report_missing(entries)
    done, started, before = [0], time.perf_counter(), {}

    def progress(kernel: str, rows: list[dict]) -> None:
        done[0] += 1
        case = ",".join(p for p in rows[0]["case"].split(",") if not p.startswith("kernel="))
        states = ", ".join(f"{r['backend']} {r['status']}" for r in rows)
        print(f"[{done[0]}/{total}] {kernel} {case[:90]}: {states} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)

    card_hint = next(iter(sorted(p.parent for p in results.glob("*/quick.csv"))), None)
    if card_hint is not None:
        seconds, basis = estimate(card_hint, total, knobs["seconds_per_case"])
    else:
        seconds, basis = total * knobs["seconds_per_case"], f"{knobs['seconds_per_case']:g} s per case"
    print(f"quick: {len(entries)} kernels, {total} cases; estimate {seconds / 60:.1f} min ({basis}); "
          "compile time comes on top with cold caches", flush=True)
    for folder in results.glob("*/"):
        before[folder.name] = read_rows(folder / "quick.csv")
    try:
        info = run_entries(entries, str(results), args.run_id or new_run_id(), progress)
    except ConfigError as exc:
        return _error(str(exc), EXIT_CONFIG)
    except HardwareError as exc:
        return _error(str(exc), EXIT_NO_DEVICE)
    path = results / info["hardware"] / "quick.csv"
    previous = read_rows(Path(args.previous)) if args.previous else committed_rows(path, args.against or "HEAD")
    if previous is None:
        previous = before.get(info["hardware"], [])
    regressed = show(entries, read_rows(path), previous, knobs["min_drop"])
    print(f"quick: {info['cases']} cases in {info['seconds'] / 60:.1f} min; rows in {path.as_posix()}, "
          f"manifest {info['manifest'].as_posix()}")
    return EXIT_REGRESSION if regressed and args.fail_on_regression else 0


def _report_missing(entries) -> None:
    """One line per baseline (or published kernel) that cannot run here: its rows become `skipped`."""
    from repro.baselines import activate
    from repro.measure.experiment import load_experiment

    activate()
    seen = set()
    for entry in entries:
        exp = load_experiment(entry.experiment)
        for name in [*entry.baselines, *([entry.upstream] if entry.upstream else [])]:
            if (exp.name, name) in seen:
                continue
            seen.add((exp.name, name))
            reason = exp.backend(name).probe()
            if reason:
                print(f"quick: {entry.kernel}: {name} unavailable ({reason}); `make baselines` builds the "
                      "pinned comparators", flush=True)


if __name__ == "__main__":
    sys.exit(main())
