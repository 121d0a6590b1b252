"""Read a results tree: per-hardware experiment CSVs, run manifests, and the CPU-side tables.

Layout (the results contract):
    results/<hardware>/<experiment>.csv     one row per (case, backend)
    results/<hardware>/env-<run_id>.json    one manifest per run
    results/loc.csv, results/portability.csv, results/scaling.csv   (optional)
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from repro.results.store import parse_case

MEASURED_STATUSES = ("ok", "incorrect", "skipped", "error", "oom", "timeout")
NUMERIC_COLUMNS = ("median_ms", "p25_ms", "p75_ms", "tflops", "gbps", "peak_fraction", "rel_l2", "max_abs")
TEXT_COLUMNS = ("experiment", "case", "backend", "status", "run_id", "error", "source")
SIDE_TABLES = ("loc", "portability", "scaling")


@dataclass
class Results:
    """All of results/, as data frames; `root` is kept for relative links in the paper."""

    root: Path
    experiments: dict[str, pd.DataFrame] = field(default_factory=dict)  # name -> rows, all hardware
    params: dict[str, list[str]] = field(default_factory=dict)  # name -> case parameter names, in order
    manifests: dict[tuple[str, str], dict] = field(default_factory=dict)  # (hardware, run_id) -> manifest
    side: dict[str, pd.DataFrame] = field(default_factory=dict)  # loc / portability / scaling
    notes: list[str] = field(default_factory=list)  # files skipped, and why

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
    if "peak_fraction" not in frame:
        # The harness writes the roofline share (the larger of the compute and HBM shares) instead.
        for column in ("roofline_frac", "tflops_frac"):
            if column in frame:
                frame["peak_fraction"] = frame[column]
                break
    for column in NUMERIC_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else float("nan")
    parsed = [parse_case(case) for case in frame["case"]]
    params: list[str] = []
    for case in parsed:
        params += [key for key in case if key not in params]
    for key in params:
        # The case string is canonical; a column of the same name may have been typed differently.
        frame[key] = pd.Series([case.get(key) for case in parsed], index=frame.index, dtype=object)
    frame["hardware"] = hardware
    return frame, params


def _read_csv(path: Path, notes: list[str], text: tuple = ()) -> Optional[pd.DataFrame]:
    try:
        # Text columns stay text: an all-digit run id must not turn into a float.
        return pd.read_csv(path, dtype={c: str for c in text})
    except Exception as exc:  # a corrupt file is reported, never silently dropped
        notes.append(f"skipped {path.as_posix()}: {type(exc).__name__}: {exc}")
        return None


def _load_hardware(results: Results, folder: Path) -> None:
    for path in sorted(folder.glob("*.csv")):
        frame = _read_csv(path, results.notes, TEXT_COLUMNS)
        if frame is None or frame.empty:
            continue
        frame, params = _normalise(frame, folder.name, path.stem)
        frame["csv"] = path.relative_to(results.root.parent).as_posix()
        name = path.stem
        if name in results.experiments:
            frame = pd.concat([results.experiments[name], frame], ignore_index=True)
        results.experiments[name] = frame
        results.params[name] = results.params.get(name, []) + [
            p for p in params if p not in results.params.get(name, [])
        ]
    for path in sorted(folder.glob("env-*.json")):
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            results.notes.append(f"skipped {path.as_posix()}: {exc}")
            continue
        run_id = str(manifest.get("run_id") or path.stem.removeprefix("env-"))
        manifest["_path"] = path.relative_to(results.root.parent).as_posix()
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
    """Read everything under `root`; missing folders or files simply give empty parts."""
    root = Path(root)
    results = Results(root=root)
    if not root.is_dir():
        results.notes.append(f"no results folder at {root.as_posix()}")
        return results
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        _load_hardware(results, folder)
    for name, frame in list(results.experiments.items()):
        order = ["hardware"] + results.params[name] + ["backend", "status", "run_id"]
        results.experiments[name] = sort_rows(frame, order)
    for name in SIDE_TABLES:
        path = root / f"{name}.csv"
        if path.exists():
            frame = _read_csv(path, results.notes)
            if frame is not None:
                frame["csv"] = path.relative_to(root.parent).as_posix()
                results.side[name] = frame
    return results


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
