"""The results contract: results/<hardware>/<experiment>.csv, one row per (case, backend).

Jobs that run beside others (a sharded or parallel sweep) each write their own part file,
results/<hardware>/parts/<experiment>.<job>.csv, folded into the main file by repro/run/merge.py;
two processes never rewrite one CSV. Every write replaces its file atomically.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional

import pandas as pd

STATUSES = ("ok", "incorrect", "skipped", "error", "oom", "timeout", "reported")
REQUIRED = ("experiment", "case", "backend", "status", "median_ms", "tflops", "run_id")
# The leading columns, in order; case parameters follow, then anything else alphabetically.
LEADING = REQUIRED + ("gbps", "p25_ms", "p75_ms", "min_ms", "reps", "tflops_frac", "bw_frac",
                      "roofline_frac", "rel_l2", "max_abs", "error", "source", "hardware")
TRAILING = ("code_hash", "env_key", "timestamp")
FINAL = ("ok", "incorrect")  # statuses that a rerun keeps; the others are measured again
KEY = ["case", "backend"]
PARTS = "parts"


class StoreError(RuntimeError):
    """A results file that cannot be trusted (corrupt, truncated, wrong schema)."""


def case_key(params: Mapping) -> str:
    """Canonical `key=value,...` string for a case: sorted keys, plain python values."""
    def fmt(v):
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)

    return ",".join(f"{k}={fmt(params[k])}" for k in sorted(params))


def parse_value(text: str):
    """'128' -> 128, '0.5' -> 0.5, 'True' -> True, anything else stays text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_case(case: str) -> dict:
    """The canonical `key=value,...` case string as a dict of Python scalars."""
    pairs = (item.split("=", 1) for item in str(case).split(",") if "=" in item)
    return {key.strip(): parse_value(value) for key, value in pairs}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_csv(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
        with os.fdopen(fd, "w", newline="") as fh:
            df.to_csv(fh, index=False, lineterminator="\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _damaged(path: Path, what: str) -> StoreError:
    return StoreError(f"{path}: {what}; move it aside or fix it, it was not overwritten")


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return True  # empty: pandas reports it below
        fh.seek(size - 1)
        return fh.read(1) == b"\n"


def read_results(path: Path) -> pd.DataFrame:
    """Load and check one results file; raise StoreError (never silently drop) when it is damaged."""
    try:
        if not _ends_with_newline(path):  # the writer always ends a file with one
            raise _damaged(path, "truncated results file (the last line is incomplete)")
        df = pd.read_csv(path, keep_default_na=True)
    except StoreError:
        raise
    except Exception as exc:
        raise _damaged(path, f"unreadable results file ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise _damaged(path, f"missing columns {missing}")
    bad = sorted(set(df["status"].dropna()) - set(STATUSES))
    if bad or df["status"].isna().any():
        raise StoreError(f"{path}: unknown status values {bad or ['<empty>']}; allowed: {', '.join(STATUSES)}")
    if df.duplicated(KEY).any():
        raise _damaged(path, "duplicate (case, backend) rows")
    return df


def order_columns(df: pd.DataFrame, params: Iterable[str] = ()) -> pd.DataFrame:
    params = list(dict.fromkeys(p for p in params if p in df.columns and p not in LEADING and p not in TRAILING))
    lead = [c for c in LEADING if c in df.columns]
    tail = [c for c in TRAILING if c in df.columns]
    rest = sorted(set(df.columns) - set(lead) - set(params) - set(tail))
    return df[lead + params + rest + tail]


def newest_rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One row per (case, backend): the latest timestamp wins; on a tie, the later frame."""
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=list(REQUIRED))
    tagged = [f.assign(_source=i) for i, f in enumerate(frames)]
    both = pd.concat(tagged, ignore_index=True)
    stamp = both["timestamp"].fillna("").astype(str) if "timestamp" in both else ""
    both = both.assign(_stamp=stamp).sort_values(["_stamp", "_source"], kind="mergesort")
    return both.drop_duplicates(KEY, keep="last").drop(columns=["_stamp", "_source"]).reset_index(drop=True)


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on a results folder while a file in it is read, changed and replaced."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def part_files(root: str | Path, hardware: str, experiment: str) -> list[Path]:
    """Unmerged part files of one experiment, oldest first."""
    folder = Path(root) / hardware / PARTS
    found = folder.glob(f"{experiment}.*.csv") if folder.is_dir() else []
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


def _load(path: Path) -> pd.DataFrame:
    return read_results(path) if path.exists() else pd.DataFrame(columns=list(REQUIRED))


class ResultsStore:
    """One experiment's rows on one hardware, written to the main file or to one part file.

    `df` holds the rows of the file this store writes; `is_done` also sees the main file and
    every unmerged part, so a rerun after a kill skips whatever any job already measured.
    """

    def __init__(self, root: str | Path, hardware: str, experiment: str, part: Optional[str] = None):
        folder = Path(root) / hardware
        self.main_path = folder / f"{experiment}.csv"
        self.path = self.main_path if part is None else folder / PARTS / f"{experiment}.{part}.csv"
        self.df = _load(self.path)
        self._stat = self._file_stat()
        others = [_load(self.main_path)] if part is not None else []
        others += [read_results(p) for p in part_files(root, hardware, experiment) if p != self.path]
        self._others = others
        self._view: Optional[pd.DataFrame] = None  # main + parts, rebuilt after a write
        self.params: list[str] = []

    def _file_stat(self):
        return (self.path.stat().st_mtime_ns, self.path.stat().st_size) if self.path.exists() else None

    def is_done(self, case: str, backend: str, code_hash: str, env_key: str) -> bool:
        """A final row for this (case, backend) measured by the same code in the same environment."""
        if self._view is None:
            self._view = newest_rows([*self._others, self.df]) if self._others else self.df
        df = self._view
        if df.empty or "code_hash" not in df.columns:
            return False
        hit = df[(df["case"] == case) & (df["backend"] == backend)]
        return bool(((hit["status"].isin(FINAL)) & (hit["code_hash"] == code_hash)
                     & (hit["env_key"] == env_key)).any())

    def _refresh(self) -> None:
        """Another process (a merge) may have replaced the file since we read it: start from its rows."""
        if self._file_stat() != self._stat:
            self.df = _load(self.path)

    def _replace_file(self, df: pd.DataFrame) -> None:
        missing = [c for c in REQUIRED if c not in df.columns]  # e.g. a file whose first row is an error
        df = df.assign(**{c: pd.NA for c in missing}) if missing else df
        self.df = order_columns(df, [*self.params, *df.columns])
        atomic_write_csv(self.df, self.path)
        self._stat = self._file_stat()
        self._view = None

    def write(self, rows: Iterable[Mapping]) -> None:
        """Add rows, replacing any earlier row for the same (case, backend)."""
        new = pd.DataFrame([dict(r) for r in rows])
        if new.empty:
            return
        if not set(new["status"]) <= set(STATUSES):
            raise StoreError(f"refusing unknown status {sorted(set(new['status']) - set(STATUSES))}")
        with locked(self.path.parent):
            self._refresh()
            keep = self.df
            if not keep.empty:
                replaced = keep.set_index(KEY).index.isin(new.set_index(KEY).index)
                keep = keep[~replaced]
            frames = [f for f in (keep, new) if not f.empty]
            self._replace_file(pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0])

    def drop_status(self, status: str) -> None:
        """Remove every row of a status (used to refresh `reported` rows as a whole)."""
        with locked(self.path.parent):
            self._refresh()
            if not self.df.empty and (self.df["status"] == status).any():
                self._replace_file(self.df[self.df["status"] != status])
