"""Read a results tree: per-hardware experiment CSVs, run manifests, and the CPU-side tables.

Layout (the results contract, owned by repro/results):
    results/<hardware>/<experiment>.csv     one row per (case, backend)
    results/<hardware>/env-<run_id>.json    one manifest per run
    results/loc.csv, results/portability.csv, results/scaling.csv   (optional)

Everything is read through the store's validated readers under the store's own column names,
then through the report's own checks (repro/report/checks.py: figures that can be true, names,
manifests as the runner writes them); anything damaged (a missing results folder, a cut or
malformed CSV, an impossible figure, a damaged name, a manifest that is not one a run writes)
raises StoreError, so no report is ever made from results that could not be read. The harness
self-test's results (results/cpu/, experiment selftest) are no card: left out, with a note.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from repro.report import checks
from repro.results import manifest as mf
from repro.results.store import FIGURES, MEASURED, Status, StoreError, parse_case, read_csv_checked, read_results

MEASURED_STATUSES = tuple(s.value for s in MEASURED)
MEASURED_OK = Status.OK.value
NUMERIC_COLUMNS = FIGURES
TEXT_COLUMNS = ("experiment", "case", "backend", "status", "run_id", "error", "source")
SIDE_TABLES = ("loc", "portability", "scaling")
# Tables that tools write beside a hardware's experiment files; not experiments.
HARDWARE_SIDE_TABLES = ("scaling", "isolation", "quick")  # quick: the scoreboard (repro/quick), not a sweep


@dataclass
class Results:
    """All of results/, as data frames; `root` is kept for relative links in the paper."""

    root: Path
    experiments: dict[str, pd.DataFrame] = field(default_factory=dict)  # name -> rows, all hardware
    params: dict[str, list[str]] = field(default_factory=dict)  # name -> case parameter names, in order
    manifests: dict[tuple[str, str], dict] = field(default_factory=dict)  # (hardware, run_id) -> manifest
    side: dict[str, pd.DataFrame] = field(default_factory=dict)  # loc / portability / scaling
    notes: list[str] = field(default_factory=list)  # remarks on the tree for the README

    @property
    def hardware(self) -> list[str]:
        names = {hw for frame in self.experiments.values() for hw in frame["hardware"].unique()}
        return sorted(names | {hw for hw, _ in self.manifests})

    def rows(self, experiment: str, hardware: Optional[str] = None) -> pd.DataFrame:
        frame = self.experiments.get(experiment)
        if frame is None:
            return pd.DataFrame()
        return frame if hardware is None else frame[frame["hardware"] == hardware]


def _normalise(frame: pd.DataFrame, hardware: str, experiment: str) -> tuple[pd.DataFrame, list[str]]:
    """Add missing contract columns, type them, and make every case parameter its own column."""
    frame = frame.copy()
    for column in TEXT_COLUMNS:
        if column not in frame:
            frame[column] = ""
        frame[column] = frame[column].map(lambda v: "" if v is None or v != v else str(v)).astype(object)
    frame.loc[frame["experiment"] == "", "experiment"] = experiment
    for column in NUMERIC_COLUMNS:
        if column not in frame:
            frame[column] = float("nan")
    parsed = [parse_case(case) for case in frame["case"]]
    params: list[str] = []
    for case in parsed:
        params += [key for key in case if key not in params]
    for key in params:
        # The case string is canonical; a column of the same name may have been typed differently.
        frame[key] = pd.Series([case.get(key) for case in parsed], index=frame.index, dtype=object)
    frame["hardware"] = hardware
    return frame, params


def _side_table(results: Results, name: str, path: Path) -> None:
    frame = read_csv_checked(path)
    frame["csv"] = path.relative_to(results.root.parent).as_posix()
    if name in results.side:
        frame = pd.concat([results.side[name], frame], ignore_index=True)
    results.side[name] = frame


def _read_experiments(folder: Path) -> tuple[dict[Path, pd.DataFrame], list[Path]]:
    """A folder's experiment files, read and checked; the self-test's files apart (with a note)."""
    frames, selftest = {}, []
    for path in sorted(folder.glob("*.csv")):
        checks.check_folder_name(path)
        if path.stem in HARDWARE_SIDE_TABLES:
            continue
        frame = read_results(path)
        checks.check_rows(path, frame)
        if checks.is_selftest_file(path, frame):
            selftest.append(path)
        elif not frame.empty:
            frames[path] = frame
    return frames, selftest


def _selftest_note(results: Results, paths: list[Path]) -> None:
    names = ", ".join(p.relative_to(results.root.parent).as_posix() for p in paths)
    results.notes.append(f"left out {names}: the harness self-test's rows (experiment selftest on the cpu "
                         "stand-in hardware), not measurements of a card")


def _load_hardware(results: Results, folder: Path) -> None:
    checks.check_folder_name(folder)
    if checks.is_selftest_folder(folder):
        _selftest_note(results, [folder])
        return
    frames, selftest = _read_experiments(folder)
    if selftest and not frames:  # a folder of nothing but self-test rows: no card, manifests and all
        _selftest_note(results, [folder])
        return
    if selftest:
        _selftest_note(results, selftest)
    for path in sorted(folder.glob("*.csv")):
        if path.stem in HARDWARE_SIDE_TABLES:
            _side_table(results, path.stem, path)
    for path, frame in frames.items():
        frame, params = _normalise(frame, folder.name, path.stem)
        frame["csv"] = path.relative_to(results.root.parent).as_posix()
        name = path.stem
        if name in results.experiments:
            frame = pd.concat([results.experiments[name], frame], ignore_index=True)
        results.experiments[name] = frame
        results.params[name] = results.params.get(name, []) + [
            p for p in params if p not in results.params.get(name, [])
        ]
    for run_id, manifest in checks.read_manifests(folder).items():
        manifest["_path"] = mf.path_of(folder, run_id).relative_to(results.root.parent).as_posix()
        results.manifests[(folder.name, run_id)] = manifest


def sort_rows(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Sort by mixed-type columns deterministically (numbers numerically, then text)."""
    if frame.empty:
        return frame

    def key(column: pd.Series) -> pd.Series:
        return column.map(lambda v: (0, float(v), "") if isinstance(v, (int, float, bool)) and v == v
                          else (1, 0.0, str(v)))

    return frame.sort_values(list(keys), key=key, kind="mergesort").reset_index(drop=True)


def load(root: str | Path) -> Results:
    """Read everything under `root`; raise StoreError when it is missing or anything in it is damaged."""
    root = Path(root)
    results = Results(root=root)
    if not root.is_dir():
        raise StoreError(f"{root.as_posix()}: no results folder there" if not root.exists()
                         else f"{root.as_posix()}: not a folder (a results tree is a folder)")
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        _load_hardware(results, folder)
    for name, frame in list(results.experiments.items()):
        order = ["hardware"] + results.params[name] + ["backend", "status", "run_id"]
        results.experiments[name] = sort_rows(frame, order)
    side = {name: frame for name, frame in results.side.items()}
    results.side = {}
    for name in SIDE_TABLES:
        path = root / f"{name}.csv"
        if path.exists():
            _side_table(results, name, path)
    for name, frame in side.items():  # the per-hardware ones after the tree-wide one
        results.side[name] = pd.concat([results.side[name], frame], ignore_index=True) \
            if name in results.side else frame
    return results


def require_measured(results: Results) -> None:
    """Refuse a tree that measured nothing: no card folder holds an ok row (a report of it would
    replace every figure and verdict with 'not measured')."""
    if any((frame["status"] == MEASURED_OK).any() for frame in results.experiments.values()):
        return
    left_out = f" ({'; '.join(results.notes)})" if results.notes else ""
    raise StoreError(f"{results.root.as_posix()}: no measured results: no card folder holds an ok row"
                     f"{left_out}")


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
