"""The results contract: results/<hardware>/<experiment>.csv, one row per (case, backend).

The store owns the schema: the columns and their order, the status vocabulary (`Status`), the
typed row (`ResultRow`), case strings (`case_key`, `parse_case`) and the checks every row passes
on read and on write (`row_problems`). Published third-party figures (`reported` rows) carry a
backend name of their own (`<backend>_paper`), so they never share a key with a measured row.

Jobs that run beside others (a sharded or parallel sweep) each write their own part file,
results/<hardware>/parts/<experiment>.<job>.csv, folded into the main file by repro/run/merge.py;
two processes never rewrite one CSV. Every write replaces its file atomically.
"""
from __future__ import annotations

import dataclasses
import fcntl
import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Optional

import pandas as pd


class Status(StrEnum):
    """What became of one (case, backend); the values are what the CSV holds."""

    OK = "ok"  # passed the gate (and was timed, unless a correctness-only reference)
    INCORRECT = "incorrect"  # failed the gate: error figures, no timing
    SKIPPED = "skipped"  # the backend cannot run here (probe, vendor)
    ERROR = "error"
    OOM = "oom"
    TIMEOUT = "timeout"
    REPORTED = "reported"  # a published third-party figure, never measured here


STATUSES = tuple(s.value for s in Status)
MEASURED = tuple(s for s in Status if s is not Status.REPORTED)
FINAL = (Status.OK, Status.INCORRECT)  # statuses that a rerun keeps; the others are measured again
PUBLISHED_SUFFIX = "_paper"  # published rows' backends: fa3_paper, flash_mla_paper, ...

REQUIRED = ("experiment", "case", "backend", "status", "median_ms", "tflops", "run_id")
FILLED = ("experiment", "case", "backend", "status", "run_id")  # never empty on any row
# Figures: numbers (or empty) on every row; the unit is in the name.
FIGURES = ("median_ms", "tflops", "gbps", "p25_ms", "p75_ms", "min_ms", "reps", "tflops_frac", "bw_frac",
           "roofline_frac", "rel_l2", "max_abs", "trials", "speedup", "speedup_lo", "speedup_hi")
TIMINGS = ("median_ms", "p25_ms", "p75_ms", "min_ms")  # where present: finite and positive
# Text columns stay text when read (an all-digit run id or code hash must not become a number).
TEXT = ("experiment", "case", "backend", "status", "run_id", "error", "source", "hardware", "code_hash",
        "env_key", "timestamp", "trial_ms")
# The leading columns, in order; case parameters follow, then anything else alphabetically.
LEADING = REQUIRED + ("gbps", "p25_ms", "p75_ms", "min_ms", "reps", "tflops_frac", "bw_frac",
                      "roofline_frac", "rel_l2", "max_abs", "error", "source", "hardware", "trials", "trial_ms",
                      "speedup", "speedup_lo", "speedup_hi")
TRAILING = ("code_hash", "env_key", "timestamp")
KEY = ["case", "backend"]
PARTS = "parts"


class StoreError(RuntimeError):
    """A results file or row that cannot be trusted (corrupt, truncated, wrong schema, bad figures)."""


def published_backend(backend: str) -> str:
    """The backend name a published figure of `backend` is stored under: `fa3` -> `fa3_paper`."""
    return backend if backend.endswith(PUBLISHED_SUFFIX) else backend + PUBLISHED_SUFFIX


def measured_backend(backend: str) -> str:
    """The measured backend a published name stands beside: `fa3_paper` -> `fa3` (others unchanged)."""
    return backend.removesuffix(PUBLISHED_SUFFIX)


def is_published(status) -> bool:
    return str(status) == Status.REPORTED


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


def _empty(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) or value == ""


def _number(value) -> Optional[float]:
    """A figure as a float; None when empty; raises ValueError for anything that is not a number."""
    if _empty(value):
        return None
    if isinstance(value, bool):
        raise ValueError(value)
    number = float(value)  # str, int, float, numpy scalars
    return None if math.isnan(number) else number


def row_problems(row: Mapping) -> list[str]:
    """What is wrong with one row under the contract (empty when nothing is)."""
    problems = [f"empty {name}" for name in FILLED if _empty(row.get(name))]
    status, backend = row.get("status"), str(row.get("backend") or "")
    if not _empty(status) and str(status) not in STATUSES:
        problems.append(f"unknown status {status!r} (allowed: {', '.join(STATUSES)})")
    figures = {}
    for name in FIGURES:
        try:
            figures[name] = _number(row.get(name))
        except (TypeError, ValueError):
            problems.append(f"{name}={row.get(name)!r} is not a number")
    for name in TIMINGS:
        value = figures.get(name)
        if value is not None and not (math.isfinite(value) and value > 0):
            problems.append(f"{name}={value!r} is not a positive time")
    if str(status) == Status.OK and figures.get("median_ms") is None and figures.get("rel_l2") is None:
        problems.append("an ok row without median_ms (timed) or rel_l2 (checked)")
    if is_published(status):
        if backend and not backend.endswith(PUBLISHED_SUFFIX):
            problems.append(f"published row under the measured backend name {backend!r} "
                            f"(published figures are stored as {published_backend(backend)!r})")
        if all(figures.get(name) is None for name in ("median_ms", "tflops", "gbps")):
            problems.append("a reported row without a figure (median_ms, tflops or gbps)")
    elif backend.endswith(PUBLISHED_SUFFIX):
        problems.append(f"{status} row under the published backend name {backend!r}")
    return problems


def _check_rows(records: Iterable[Mapping], where: str) -> None:
    bad = []
    for i, row in enumerate(records):
        found = row_problems(row)
        if found:
            bad.append(f"row {i + 1} ({row.get('case')}, {row.get('backend')}): {'; '.join(found)}")
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise StoreError(f"{where}: {'; '.join(bad[:3])}{more}")


@dataclass(frozen=True)
class ResultRow:
    """One (case, backend) row of the contract; `to_dict()` gives the stored columns.

    Times are in milliseconds (`*_ms`), throughput in TFLOPS and GB/s, fractions of the hardware
    profile's peaks in [0, 1] (`*_frac`), errors relative (`rel_l2`, `max_abs` over max|ref|).
    """

    experiment: str
    case: str
    backend: str
    status: Status
    run_id: str
    params: Mapping = field(default_factory=dict)  # the case's parameters, each its own column
    hardware: Optional[str] = None
    median_ms: Optional[float] = None
    p25_ms: Optional[float] = None
    p75_ms: Optional[float] = None
    min_ms: Optional[float] = None
    reps: Optional[int] = None
    tflops: Optional[float] = None
    gbps: Optional[float] = None
    tflops_frac: Optional[float] = None
    bw_frac: Optional[float] = None
    roofline_frac: Optional[float] = None
    rel_l2: Optional[float] = None
    max_abs: Optional[float] = None
    trials: Optional[int] = None  # interleaved timing trials pooled into the figures above
    trial_ms: Optional[str] = None  # each trial's median, ";"-joined (paired across a case's backends)
    speedup: Optional[float] = None  # over the experiment's baseline, from the paired trials
    speedup_lo: Optional[float] = None  # its 95% interval (empty with one trial)
    speedup_hi: Optional[float] = None
    error: Optional[str] = None
    source: Optional[str] = None
    seed: Optional[int] = None
    code_hash: Optional[str] = None
    env_key: Optional[str] = None
    timestamp: Optional[str] = None

    def __post_init__(self):
        if str(self.status) in STATUSES:
            object.__setattr__(self, "status", Status(str(self.status)))
        problems = row_problems(self.to_dict())
        if problems:
            raise StoreError(f"refusing row ({self.case}, {self.backend}): {'; '.join(problems)}")

    @classmethod
    def from_mapping(cls, row: Mapping) -> "ResultRow":
        """A row as written by the harness; keys that are not contract fields are case parameters."""
        names = {f.name for f in dataclasses.fields(cls)} - {"params"}
        known = {k: v for k, v in row.items() if k in names}
        return cls(**known, params={k: v for k, v in row.items() if k not in names})

    @classmethod
    def published(cls, experiment: str, params: Mapping, backend: str, run_id: str, source: str,
                  hardware: Optional[str] = None, **figures) -> "ResultRow":
        """A third-party figure: stored as `reported` under `<backend>_paper`, on the case's own key."""
        return cls(experiment=experiment, case=case_key(params), backend=published_backend(backend),
                   status=Status.REPORTED, run_id=run_id, params=dict(params), hardware=hardware,
                   source=source, **figures)

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "params":
                out.update({k: v for k, v in self.params.items() if k not in out})
            else:
                value = getattr(self, f.name)
                out[f.name] = value.value if isinstance(value, Status) else value
        return {k: v for k, v in out.items() if v is not None}


ARTIFACTS = "artifacts"


def artifact_path(root: str | Path, hardware: str, experiment: str, name: str) -> Path:
    return Path(root) / hardware / ARTIFACTS / f"{experiment}.{name}.csv"


def write_artifact(root: str | Path, hardware: str, experiment: str, name: str, case: str, backend: str,
                   rows: list[Mapping]) -> Path:
    """Replace one (case, backend)'s rows of an artifact table (atomically, under the folder's lock)."""
    path = artifact_path(root, hardware, experiment, name)
    new = pd.DataFrame([{"case": case, "backend": backend, **dict(r)} for r in rows])
    with locked(path.parent):
        old = read_csv_checked(path, ("case", "backend")) if path.exists() else new.iloc[0:0]
        if not {"case", "backend"} <= set(old.columns):
            raise StoreError(f"{path}: no case/backend columns; move it aside or fix it, it was not overwritten")
        keep = old[~((old["case"] == case) & (old["backend"] == backend))]
        frames = [f for f in (keep, new) if not f.empty]
        if frames:
            atomic_write_csv(pd.concat(frames, ignore_index=True), path)
    return path


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


def read_csv_checked(path: Path, text: Iterable[str] = ()) -> pd.DataFrame:
    """Read any CSV the suite writes: a cut (no final newline) or unparsable file raises StoreError."""
    try:
        if not _ends_with_newline(path):  # the writer always ends a file with one
            raise _damaged(path, "truncated file (the last line is incomplete)")
        return pd.read_csv(path, keep_default_na=True, dtype={c: str for c in text})
    except StoreError:
        raise
    except Exception as exc:
        raise _damaged(path, f"unreadable CSV ({type(exc).__name__}: {exc})") from exc


def read_results(path: Path) -> pd.DataFrame:
    """Load and check one results file; raise StoreError (never silently drop) when it is damaged."""
    path = Path(path)
    df = read_csv_checked(path, TEXT)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise _damaged(path, f"missing columns {missing}")
    bad = sorted(set(df["status"].dropna()) - set(STATUSES))
    if bad or df["status"].isna().any():
        raise StoreError(f"{path}: unknown status values {bad or ['<empty>']}; allowed: {', '.join(STATUSES)}")
    if df.duplicated(KEY).any():
        raise _damaged(path, "duplicate (case, backend) rows")
    try:
        _check_rows(df.to_dict("records"), str(path))
    except StoreError as exc:
        raise _damaged(path, str(exc).removeprefix(f"{path}: ")) from None
    for name in FIGURES:
        if name in df.columns:
            df[name] = pd.to_numeric(df[name])
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
        # Called once, after the first row this store writes (the runner writes the run's manifest).
        self.on_first_write: Optional[Callable[[], None]] = None

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

    def trials_of(self, case: str, backend: str) -> list[float]:
        """The stored `trial_ms` of an ok row (main file and parts), or [] (then no interval)."""
        if self._view is None:
            self._view = newest_rows([*self._others, self.df]) if self._others else self.df
        df = self._view
        if df.empty or "trial_ms" not in df.columns:
            return []
        hit = df[(df["case"] == case) & (df["backend"] == backend) & (df["status"] == Status.OK)]
        text = hit["trial_ms"].iloc[-1] if len(hit) else ""
        return [float(x) for x in str(text).split(";") if x.strip() and str(text) != "nan"]

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

    def write(self, rows: Iterable[Mapping | ResultRow]) -> None:
        """Add rows, replacing any earlier row for the same (case, backend).

        Refused (StoreError, nothing written): a row that breaks the contract, and a published row
        that would replace a measured one or the other way round.
        """
        records = [r.to_dict() if isinstance(r, ResultRow) else dict(r) for r in rows]
        if not records:
            return
        _check_rows(records, f"refusing to write {self.path}")
        new = pd.DataFrame(records)
        if new.duplicated(KEY).any():
            raise StoreError(f"refusing to write {self.path}: two rows for one (case, backend)")
        with locked(self.path.parent):
            self._refresh()
            keep = self.df
            if not keep.empty:
                both = keep.merge(new[KEY + ["status"]], on=KEY, suffixes=("", "_new"))
                flips = both[both["status"].map(is_published) != both["status_new"].map(is_published)]
                if not flips.empty:
                    first = flips.iloc[0]
                    raise StoreError(f"refusing to write {self.path}: a {first['status_new']} row would replace "
                                     f"the {first['status']} row of ({first['case']}, {first['backend']}); "
                                     "published and measured rows never share a key")
                replaced = keep.set_index(KEY).index.isin(new.set_index(KEY).index)
                keep = keep[~replaced]
            frames = [f for f in (keep, new) if not f.empty]
            self._replace_file(pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0])
        if self.on_first_write is not None:
            hook, self.on_first_write = self.on_first_write, None
            hook()

    def drop_status(self, status: Status | str) -> None:
        """Remove every row of a status (used to refresh `reported` rows as a whole)."""
        status = Status(status)
        with locked(self.path.parent):
            self._refresh()
            if not self.df.empty and (self.df["status"] == status).any():
                self._replace_file(self.df[self.df["status"] != status])
