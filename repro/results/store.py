"""The results contract: results/<hardware>/<experiment>.csv, one row per (case, backend).

The store owns the schema: the columns and their order, the status vocabulary (`Status`), the
typed row (`ResultRow`), case strings (`case_key`, `parse_case`) and the checks every row passes
on read and on write (`row_problems`). Published third-party figures (`reported` rows) carry a
backend name of their own (`<backend>_paper`), so they never share a key with a measured row.

Jobs that run beside others (a sharded or parallel sweep) each write their own part file,
results/<hardware>/parts/<experiment>.<job>.csv, folded into the main file by repro/run/merge.py;
two processes never rewrite one CSV. Every write replaces its file atomically.

A row's verdict depends on the gate it passed: its `gate` column (`gate_of`) records the limits it
was judged by, the run's manifest all of them (`gate_settings`, `gate_key`), and `looser_gate`
says whether a row was judged more leniently than a reference (the experiment's defaults). A
failure row (error, oom, timeout) never replaces an ok row measured by the same code: the ok row
is kept and `write` says so.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import re
import tempfile
import warnings
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
FAILED = (Status.ERROR, Status.OOM, Status.TIMEOUT)  # never replace an ok row of the same code
PUBLISHED_SUFFIX = "_paper"  # published rows' backends: fa3_paper, flash_mla_paper, ...

REQUIRED = ("experiment", "case", "backend", "status", "median_ms", "tflops", "run_id")
FILLED = ("experiment", "case", "backend", "status", "run_id")  # never empty on any row
# Figures: numbers (or empty) on every row; the unit is in the name.
FIGURES = ("median_ms", "tflops", "gbps", "p25_ms", "p75_ms", "min_ms", "reps", "tflops_frac", "bw_frac",
           "roofline_frac", "rel_l2", "max_abs", "trials", "speedup", "speedup_lo", "speedup_hi")
TIMINGS = ("median_ms", "p25_ms", "p75_ms", "min_ms")  # where present: finite and positive
# Text columns stay text when read (an all-digit run id or code hash must not become a number).
TEXT = ("experiment", "case", "backend", "status", "run_id", "error", "source", "hardware", "gate", "code_hash",
        "env_key", "timestamp", "trial_ms")
# The leading columns, in order; case parameters follow, then anything else alphabetically.
LEADING = REQUIRED + ("gbps", "p25_ms", "p75_ms", "min_ms", "reps", "tflops_frac", "bw_frac",
                      "roofline_frac", "rel_l2", "max_abs", "error", "source", "hardware", "trials", "trial_ms",
                      "speedup", "speedup_lo", "speedup_hi")
TRAILING = ("gate", "code_hash", "env_key", "timestamp")
KEY = ["case", "backend"]
PARTS = "parts"


class StoreError(RuntimeError):
    """A results file or row that cannot be trusted (corrupt, truncated, wrong schema, bad figures)."""


MAX_MESSAGE = 600  # characters of one complaint about a file: enough to find the line, never the junk itself


def _show(value, width: int = 40) -> str:
    """A value as a message quotes it: repr, cut to `width` characters."""
    text = repr(value)
    return text if len(text) <= width else f"{text[:width]}... ({len(text)} characters)"


def _label(value) -> str:
    """A name as a message shows it: itself, unless it holds control characters or is long."""
    text = str(value)
    return text if len(text) <= 60 and text.isprintable() else _show(value)


def _cap(text: str, width: int = MAX_MESSAGE) -> str:
    """One line of at most `width` characters (and a note of how long it was)."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else f"{text[:width]}... (message cut, {len(text)} characters)"


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


# Names as the experiments spell them: backends (and experiments) are identifiers; a case string is
# `key=value,...` with identifier keys, each once, and values without ',', '=', control characters
# or surrounding blanks (what `case_key` writes and `parse_case` reads back).
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
CASE_ITEM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=([^,=\x00-\x1f\x7f]+)$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Text columns that name or identify a row: never a control character in them (`error` may hold newlines).
IDENTITY = ("experiment", "case", "backend", "status", "run_id", "hardware", "gate", "code_hash", "env_key",
            "timestamp", "source")


def case_problems(case) -> list[str]:
    """What keeps `case` from being a case string (empty when it is one)."""
    text = str(case)
    items = text.split(",")
    matches = [CASE_ITEM.match(item) for item in items]
    bad = [item for item, m in zip(items, matches) if not m or m.group(2) != m.group(2).strip()]
    if bad:
        return [f"case {_show(text)} is not key=value,... (bad item {_show(bad[0])})"]
    keys = [item.split("=", 1)[0] for item in items]
    twice = [k for i, k in enumerate(keys) if k in keys[:i]]
    return [f"case {_show(text)} names {twice[0]!r} twice"] if twice else []


def name_problems(row: Mapping) -> list[str]:
    """Damaged names: a control character in an identity column, a backend or experiment that is not
    an identifier, a case that is not a case string."""
    problems = []
    for name in IDENTITY:
        value = row.get(name)
        if isinstance(value, str) and CONTROL.search(value):
            problems.append(f"{name} {_show(value)} holds a control character")
    for name in ("backend", "experiment"):
        value = row.get(name)
        if not _empty(value) and not CONTROL.search(str(value)) and not IDENTIFIER.match(str(value)):
            problems.append(f"{name} {_show(value)} is not a name (letters, digits, '_'; not starting with a digit)")
    case = row.get("case")
    if not _empty(case) and not CONTROL.search(str(case)):
        problems += case_problems(case)
    return problems


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


def _not_a_number(value) -> bool:
    """A figure given as NaN (float or text): no measurement can produce one."""
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in ("nan", "-nan", "+nan")


# An ok row's figures, when present: what a timed, gated measurement can give.
POSITIVE = ("median_ms", "p25_ms", "p75_ms", "min_ms", "reps", "trials", "speedup", "speedup_lo", "speedup_hi")
NON_NEGATIVE = ("tflops", "gbps", "tflops_frac", "bw_frac", "roofline_frac", "rel_l2", "max_abs")
NO_NAN = ("median_ms", "p25_ms", "p75_ms", "min_ms", "tflops", "gbps")  # NaN elsewhere: not known (empty)


def ok_problems(row: Mapping, figures: Mapping) -> list[str]:
    """Impossible figures in an ok row: a NaN, infinite, negative or zero time or throughput, a
    seed out of range, an infinite case parameter. A throughput of zero is a kernel that does no
    such work (a copy's TFLOPS); it passes only beside a positive other one."""
    problems = [f"{name}=nan in an ok row" for name in NO_NAN if _not_a_number(row.get(name))]
    for name in POSITIVE + NON_NEGATIVE:
        value = figures.get(name)
        if value is None or name in TIMINGS:  # times: checked on every row (row_problems)
            continue
        if not math.isfinite(value) or value < 0 or (value == 0 and name in POSITIVE):
            bound = "> 0" if name in POSITIVE else ">= 0"
            problems.append(f"{name}={value!r} in an ok row (must be finite and {bound})")
    work = [figures.get(name) for name in ("tflops", "gbps")]
    if 0 in work and not any(v is not None and v > 0 for v in work):
        problems.append("tflops and gbps both zero or missing beside a zero in an ok row (it did no work)")
    seed = row.get("seed")
    if not _empty(seed):
        try:
            ok = float(seed).is_integer() and 0 <= int(float(seed)) <= 2**63 - 1
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            problems.append(f"seed={_show(seed)} is not an integer from 0 to 2**63-1")
    for name, value in row.items():
        if name not in FIGURES and isinstance(value, float) and math.isinf(value):
            problems.append(f"{name}={value!r} in an ok row")
    return problems


def row_problems(row: Mapping) -> list[str]:
    """What is wrong with one row under the contract (empty when nothing is)."""
    problems = [f"empty {name}" for name in FILLED if _empty(row.get(name))]
    problems += name_problems(row)
    status, backend = row.get("status"), str(row.get("backend") or "")
    if not _empty(status) and str(status) not in STATUSES:
        problems.append(f"unknown status {_show(status)} (allowed: {', '.join(STATUSES)})")
    figures = {}
    for name in FIGURES:
        try:
            figures[name] = _number(row.get(name))
        except (TypeError, ValueError, OverflowError):
            problems.append(f"{name}={_show(row.get(name))} is not a number")
    for name in TIMINGS:
        value = figures.get(name)
        if value is not None and not (math.isfinite(value) and value > 0):
            problems.append(f"{name}={value!r} is not a positive time")
    if str(status) == Status.OK and figures.get("median_ms") is None and figures.get("rel_l2") is None:
        problems.append("an ok row without median_ms (timed) or rel_l2 (checked)")
    if str(status) == Status.OK:
        problems += ok_problems(row, figures)
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
            bad.append(f"row {i + 1} ({_label(row.get('case'))}, {_label(row.get('backend'))}): {'; '.join(found)}")
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise StoreError(f"{where}: {_cap('; '.join(bad[:3]) + more)}")


# --- the gate a row passed: part of its identity --------------------------------------------------

def gate_settings(settings) -> dict:
    """The settings that decide a verdict (a BenchSettings): the correctness trials and every
    dtype's tolerance. The run's manifest records them under `gate`, with `gate_key`."""
    tolerance = {str(d): {"rel_l2": float(t.rel_l2), "max_abs_rel": float(t.max_abs_rel)}
                 for d, t in sorted(settings.tolerance.items())}
    return {"correctness_trials": int(settings.correctness_trials), "tolerance": tolerance}


def gate_key(settings) -> str:
    """A short hash of `gate_settings`: equal for two runs that judge every dtype alike."""
    text = json.dumps(gate_settings(settings), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def gate_of(settings, dtype: Optional[str]) -> str:
    """A row's `gate` column: the limits its case's dtype was judged by, as `key=value,...`
    (`max_abs_rel=0.01,rel_l2=0.002,trials=3`); `trials=N` alone where no tolerance is configured."""
    gate: dict = {"trials": int(settings.correctness_trials)}
    tol = settings.tolerance.get(str(dtype)) if dtype is not None else None
    if tol is not None:
        gate.update(rel_l2=float(tol.rel_l2), max_abs_rel=float(tol.max_abs_rel))
    return case_key(gate)


def parse_gate(text) -> dict:
    """A `gate` column back as {trials, rel_l2, max_abs_rel} (the keys it holds); {} when empty."""
    return {} if _empty(text) else parse_case(text)


def looser_gate(gate, reference: str) -> list[str]:
    """How a row's `gate` judged more leniently than `reference` (e.g. the experiment's default,
    `gate_of(default_settings(experiment), dtype)`): a higher tolerance, fewer correctness trials,
    or no gate recorded at all. Empty when it was at least as strict."""
    mine, ref = parse_gate(gate), parse_gate(reference)
    if not mine:
        return ["no gate recorded (measured before gates were stored)"]
    problems = []
    for key in ("rel_l2", "max_abs_rel"):
        if key in ref and (key not in mine or float(mine[key]) > float(ref[key])):
            problems.append(f"{key} {mine.get(key, 'not recorded')} > {ref[key]}")
    if "trials" in ref and float(mine.get("trials", 0)) < float(ref["trials"]):
        problems.append(f"{mine.get('trials', 0)} correctness trial(s) < {ref['trials']}")
    return problems


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
    gate: Optional[str] = None  # the limits the gate judged it by (`gate_of`)
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
    return StoreError(f"{path}: {_cap(what)}; move it aside or fix it, it was not overwritten")


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return True  # empty: pandas reports it below
        fh.seek(size - 1)
        return fh.read(1) == b"\n"


def read_csv_checked(path: Path, text: Iterable[str] = (), empty_only: bool = False) -> pd.DataFrame:
    """Read any CSV the suite writes: a cut (no final newline) or unparsable file raises StoreError
    (one capped line; pandas' own warnings are not printed). With `empty_only`, only an empty cell
    is missing: a `nan` or `NA` text stays text, for the row checks to see."""
    try:
        if not _ends_with_newline(path):  # the writer always ends a file with one
            raise _damaged(path, "truncated file (the last line is incomplete)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mixed-type and parser warnings: the checks say what is wrong
            # round_trip: a row read and written back keeps its figures to the last digit
            return pd.read_csv(path, keep_default_na=not empty_only, na_values=[""] if empty_only else None,
                               dtype={c: str for c in text}, low_memory=False, float_precision="round_trip")
    except StoreError:
        raise
    except Exception as exc:
        raise _damaged(path, f"unreadable CSV ({type(exc).__name__}: {_cap(str(exc), 200)})") from None


def _repeated_header(path: Path, df: pd.DataFrame) -> None:
    """A header line in the middle of the file (two files concatenated, a header appended): named by line."""
    header = pd.Series(True, index=df.index)
    for name in REQUIRED:
        header &= df[name].astype(str) == name
    if not header.any():
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        first = fh.readline().rstrip("\r\n")
        line = next((n for n, text in enumerate(fh, 2) if text.rstrip("\r\n") == first), None)
    if line is None:
        line = int(header.to_numpy().nonzero()[0][0]) + 2  # the data frame's row, counted as a line
    raise _damaged(path, f"duplicated header at line {line}")


def _records(df: pd.DataFrame) -> list[dict]:
    """The rows as dicts, an empty cell as None (a `nan` text stays text: the checks refuse it in an ok row)."""
    return df.astype(object).where(df.notna(), None).to_dict("records")


def read_results(path: Path) -> pd.DataFrame:
    """Load and check one results file; raise StoreError (never silently drop) when it is damaged."""
    path = Path(path)
    df = read_csv_checked(path, TEXT, empty_only=True)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise _damaged(path, f"missing columns {_show(missing, 200)}")
    _repeated_header(path, df)
    bad = sorted(set(df["status"].dropna()) - set(STATUSES))
    if bad or df["status"].isna().any():
        shown = ", ".join(_show(b) for b in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise StoreError(f"{path}: unknown status values [{shown or '<empty>'}]; allowed: {', '.join(STATUSES)}")
    if df.duplicated(KEY).any():
        raise _damaged(path, "duplicate (case, backend) rows")
    try:
        _check_rows(_records(df), str(path))
    except StoreError as exc:
        raise _damaged(path, str(exc).removeprefix(f"{path}: ")) from None
    for name in FIGURES:
        if name in df.columns:  # a `nan` text (kept as text to check it) reads as NaN here
            numeric = pd.api.types.is_numeric_dtype(df[name])
            df[name] = pd.to_numeric(df[name]) if numeric else df[name].astype(object).astype(float)
    return df


def order_columns(df: pd.DataFrame, params: Iterable[str] = ()) -> pd.DataFrame:
    params = list(dict.fromkeys(p for p in params if p in df.columns and p not in LEADING and p not in TRAILING))
    lead = [c for c in LEADING if c in df.columns]
    tail = [c for c in TRAILING if c in df.columns]
    rest = sorted(set(df.columns) - set(lead) - set(params) - set(tail))
    return df[lead + params + rest + tail]


def _shadowed(df: pd.DataFrame, by: pd.DataFrame) -> pd.Series:
    """Which failure rows (error, oom, timeout) of `df` have an ok row of the same (case, backend)
    and code_hash in `by`: they never replace it."""
    if df.empty or by.empty or "code_hash" not in df.columns or "code_hash" not in by.columns:
        return pd.Series(False, index=df.index)
    ok = by[by["status"] == Status.OK]
    kept = set(zip(ok["case"], ok["backend"], ok["code_hash"].astype(str)))
    failed = df["status"].isin([s.value for s in FAILED]) & df["code_hash"].notna()
    keys = zip(df["case"], df["backend"], df["code_hash"].astype(str))
    return failed & pd.Series([k in kept for k in keys], index=df.index)


def newest_rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One row per (case, backend): the latest timestamp wins; on a tie, the later frame. A failure
    row never wins over an ok row of the same code (`_shadowed`)."""
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=list(REQUIRED))
    tagged = [f.assign(_source=i) for i, f in enumerate(frames)]
    both = pd.concat(tagged, ignore_index=True)
    both = both[~_shadowed(both, both)]
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

    def is_done(self, case: str, backend: str, code_hash: str, env_key: str, gate: Optional[str] = None) -> bool:
        """A final row for this (case, backend) measured by the same code in the same environment
        and, with `gate`, judged by the same gate (`gate_of`): a run with other tolerances or
        fewer correctness trials measures it again."""
        if self._view is None:
            self._view = newest_rows([*self._others, self.df]) if self._others else self.df
        df = self._view
        if df.empty or "code_hash" not in df.columns:
            return False
        hit = df[(df["case"] == case) & (df["backend"] == backend)]
        same = hit["status"].isin(FINAL) & (hit["code_hash"] == code_hash) & (hit["env_key"] == env_key)
        if gate is not None:
            same &= (hit["gate"] == gate) if "gate" in hit.columns else False
        return bool(same.any())

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

    def _hold_back(self, new: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        """Drop the failure rows of `new` that would replace an ok row of the same code (in this
        file, the main file or any part); one line for each."""
        self._view = None
        if self._others:
            view = newest_rows([*self._others, self.df])
        else:
            view = self.df
        held = _shadowed(new, view)
        notes = [f"kept the ok row of ({r['case']}, {r['backend']}) measured by the same code "
                 f"({r['code_hash']}); this run's {r['status']} was not stored: {_cap(str(r.get('error') or ''), 200)}"
                 for r in new[held].to_dict("records")]
        return new[~held], notes

    def write(self, rows: Iterable[Mapping | ResultRow]) -> list[str]:
        """Add rows, replacing any earlier row for the same (case, backend). Returns one line for
        each row held back: a failure (error, oom, timeout) never replaces an ok row measured by
        the same code (a bad override, a flaky device); the ok row stays.

        Refused (StoreError, nothing written): a row that breaks the contract, and a published row
        that would replace a measured one or the other way round.
        """
        records = [r.to_dict() if isinstance(r, ResultRow) else dict(r) for r in rows]
        if not records:
            return []
        _check_rows(records, f"refusing to write {self.path}")
        new = pd.DataFrame(records)
        if new.duplicated(KEY).any():
            raise StoreError(f"refusing to write {self.path}: two rows for one (case, backend)")
        with locked(self.path.parent):
            self._refresh()
            new, notes = self._hold_back(new)
            if new.empty:
                return notes
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
        return notes

    def drop_status(self, status: Status | str) -> None:
        """Remove every row of a status (used to refresh `reported` rows as a whole)."""
        status = Status(status)
        with locked(self.path.parent):
            self._refresh()
            if not self.df.empty and (self.df["status"] == status).any():
                self._replace_file(self.df[self.df["status"] != status])
