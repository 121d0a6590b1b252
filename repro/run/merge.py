"""Fold part files (one per job of a sharded or parallel sweep) into results/<hardware>/<experiment>.csv.

Runs by itself at the end of a multirun (the `MergeResults` Hydra callback that the suite's
launcher configs install) and at the end of a sharded single run; by hand after a killed sweep:
    python -m repro.run.merge [--results results]
Merging is idempotent: a (case, backend) keeps its newest row, so merging twice, or a part that
was already merged, never duplicates a row. A damaged part is reported and left in place.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from repro.results.store import (PARTS, REQUIRED, Status, StoreError, atomic_write_csv, locked, newest_rows, order_columns,
                         part_files, read_results)


@dataclass
class MergeReport:
    merged: dict[str, int] = field(default_factory=dict)  # main file -> rows it holds after the merge
    parts: int = 0  # part files folded in (and removed)
    problems: list[str] = field(default_factory=list)  # damaged files, left untouched

    def lines(self) -> list[str]:
        files = ", ".join(f"{path} ({n} rows)" for path, n in self.merged.items())
        out = [f"merged {self.parts} part file(s) into {files}"] if self.parts else []
        return out + [f"not merged: {p}" for p in self.problems]


def merge_experiment(root: Path, hardware: str, experiment: str, report: MergeReport) -> None:
    """Fold every part of one experiment into its main file, under the folder's lock."""
    main = root / hardware / f"{experiment}.csv"
    with locked(main.parent):
        parts, frames = [], []
        for path in part_files(root, hardware, experiment):
            try:
                frames.append(read_results(path))
                parts.append(path)
            except StoreError as exc:
                report.problems.append(str(exc))
        if not parts:
            return
        try:
            base = read_results(main) if main.exists() else pd.DataFrame(columns=list(REQUIRED))
        except StoreError as exc:  # never overwrite a damaged main file
            report.problems.append(str(exc))
            return
        if any((f["status"] == Status.REPORTED).any() for f in frames):
            base = base[base["status"] != Status.REPORTED]  # published rows are refreshed as a whole
        merged = newest_rows([base, *frames])
        columns = [c for f in (base, *frames) for c in f.columns]
        atomic_write_csv(order_columns(merged, columns), main)
        for path in parts:  # only after the main file holds their rows: a crash here merges again
            path.unlink()
        if not any(parts[0].parent.iterdir()):
            parts[0].parent.rmdir()
        report.parts += len(parts)
        report.merged[main.as_posix()] = len(merged)


def merge_all(root: str | Path, experiments: list[str] | None = None) -> MergeReport:
    """Merge the parts of every hardware folder under root (of the named experiments, or all)."""
    root, report = Path(root), MergeReport()
    for parts_dir in sorted(root.glob(f"*/{PARTS}")):
        names = sorted({p.name.split(".", 1)[0] for p in parts_dir.glob("*.csv")})
        for name in names if experiments is None else [n for n in names if n in experiments]:
            merge_experiment(root, parts_dir.parent.name, name, report)
    return report


try:
    from hydra.experimental.callback import Callback
except ImportError:  # hydra is a dependency; this only keeps `python -m repro.run.merge` importable without it
    Callback = object


class MergeResults(Callback):
    """Hydra callback: after every job of a multirun has ended, merge the parts its jobs wrote."""

    def on_multirun_end(self, config, **kwargs) -> None:
        report = merge_all(config.results_dir)
        for line in report.lines():
            print(f"[merge] {line}", file=sys.stderr if line.startswith("not merged") else sys.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.run.merge", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="the results folder (default: results)")
    parser.add_argument("--experiment", action="append", help="only this experiment (repeatable)")
    args = parser.parse_args(argv)
    report = merge_all(args.results, args.experiment)
    for line in report.lines():
        print(line)
    return 4 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
