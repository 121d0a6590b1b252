"""The results contract: results/<hardware>/<experiment>.csv, one row per (case, backend)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

STATUSES = ("ok", "incorrect", "skipped", "error", "oom", "timeout", "reported")
REQUIRED = ("experiment", "case", "backend", "status", "median_ms", "tflops", "run_id")
# The leading columns, in order; case parameters follow, then anything else alphabetically.
LEADING = REQUIRED + ("gbps", "p25_ms", "p75_ms", "min_ms", "reps", "tflops_frac", "bw_frac",
                      "roofline_frac", "rel_l2", "max_abs", "error", "source", "hardware")
TRAILING = ("code_hash", "env_key", "timestamp")
FINAL = ("ok", "incorrect")  # statuses that a rerun keeps; the others are measured again


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


def atomic_write_csv(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            df.to_csv(fh, index=False, lineterminator="\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_results(path: Path) -> pd.DataFrame:
    """Load and check one results file; raise StoreError (never silently drop) when it is damaged."""
    try:
        df = pd.read_csv(path, keep_default_na=True)
    except Exception as exc:
        raise StoreError(f"{path}: unreadable results file ({type(exc).__name__}: {exc}); "
                         "move it aside or fix it, it was not overwritten") from exc
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise StoreError(f"{path}: missing columns {missing}; move it aside or fix it, it was not overwritten")
    bad = sorted(set(df["status"].dropna()) - set(STATUSES))
    if bad or df["status"].isna().any():
        raise StoreError(f"{path}: unknown status values {bad or ['<empty>']}; allowed: {', '.join(STATUSES)}")
    if df.duplicated(["case", "backend"]).any():
        raise StoreError(f"{path}: duplicate (case, backend) rows")
    return df


def order_columns(df: pd.DataFrame, params: Iterable[str] = ()) -> pd.DataFrame:
    params = [p for p in params if p in df.columns and p not in LEADING and p not in TRAILING]
    lead = [c for c in LEADING if c in df.columns]
    tail = [c for c in TRAILING if c in df.columns]
    rest = sorted(set(df.columns) - set(lead) - set(params) - set(tail))
    return df[lead + params + rest + tail]


class ResultsStore:
    """One experiment's rows on one hardware; every write replaces the file atomically."""

    def __init__(self, root: str | Path, hardware: str, experiment: str):
        self.path = Path(root) / hardware / f"{experiment}.csv"
        self.df = read_results(self.path) if self.path.exists() else pd.DataFrame(columns=list(REQUIRED))
        self.params: list[str] = []

    def is_done(self, case: str, backend: str, code_hash: str, env_key: str) -> bool:
        """A final row for this (case, backend) measured by the same code in the same environment."""
        df = self.df
        if df.empty or "code_hash" not in df.columns:
            return False
        hit = df[(df["case"] == case) & (df["backend"] == backend)]
        return bool(((hit["status"].isin(FINAL)) & (hit["code_hash"] == code_hash)
                     & (hit["env_key"] == env_key)).any())

    def write(self, rows: Iterable[Mapping]) -> None:
        """Add rows, replacing any earlier row for the same (case, backend)."""
        new = pd.DataFrame([dict(r) for r in rows])
        if new.empty:
            return
        if not set(new["status"]) <= set(STATUSES):
            raise StoreError(f"refusing unknown status {sorted(set(new['status']) - set(STATUSES))}")
        keep = self.df
        if not keep.empty:
            replaced = keep.set_index(["case", "backend"]).index.isin(new.set_index(["case", "backend"]).index)
            keep = keep[~replaced]
        frames = [f for f in (keep, new) if not f.empty]
        merged = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        self.df = order_columns(merged, self.params)
        atomic_write_csv(self.df, self.path)

    def drop_status(self, status: str) -> None:
        """Remove every row of a status (used to refresh `reported` rows as a whole)."""
        if not self.df.empty and (self.df["status"] == status).any():
            self.df = self.df[self.df["status"] != status]
            atomic_write_csv(self.df, self.path)
