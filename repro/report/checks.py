"""What the report refuses to draw from, beyond what the store's readers already refuse.

The store (repro/results) checks a row against the contract; the report needs more before a number
reaches a table, a figure or a verdict: figures that can be true (a time, a throughput above zero,
finite), names that cannot open a new table column or split a claim's cases (printable; backends
identifiers; cases `key=value,...`), manifests shaped as repro/results/manifest.py writes them, and
ok rows gated no more loosely than their experiment defines (the row's `gate` column against
configs/experiment/<name>.yaml's defaults). Each check raises StoreError with one line naming the
file (and row); the report then writes nothing.
"""
from __future__ import annotations

import datetime as dt
import math
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Optional

import pandas as pd

from repro.results import manifest as mf
from repro.results.store import FIGURES, Status, StoreError, case_key, gate_of, looser_gate, parse_case

# Rows whose figures are shown: measured ones and published third-party ones.
SHOWN = (Status.OK.value, Status.REPORTED.value)
# Figures that are positive whenever present (a zero time, rate or ratio is not a measurement).
POSITIVE = ("median_ms", "p25_ms", "p75_ms", "min_ms", "gbps", "speedup", "speedup_lo", "speedup_hi")
COUNTS = ("reps", "trials")  # whole numbers, at least 1
# Zero only where the experiment counts none (membw's copy has no FLOPs): then zero in every row.
UNCOUNTED_ZERO = ("tflops", "tflops_frac")
# Everything else (fractions, errors): finite and not negative.

BACKEND = re.compile(r"[A-Za-z0-9_.+-]+")
NAME = re.compile(r"[A-Za-z0-9_.+-]+")  # hardware folders and experiment files
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # as repro/run/validate.py allows
CASE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CASE_VALUE = re.compile(r"[^\s,=](?:[^,=]*[^\s,=])?")

# The harness self-test (experiment=selftest on device=cpu) writes results/cpu/: not a card.
SELFTEST_EXPERIMENTS = ("selftest",)  # repro/run/validate.py: CPU_EXPERIMENTS
SELFTEST_HARDWARE = "cpu"  # repro/run/runner.py: CPU_PROFILE's name

# Manifests: top-level key -> allowed JSON types, as repro/results/manifest.py (collect) and the
# runner (baselines, gate, sweep) and quick scoreboard (quick) write them; run_id, hardware, git and
# versions as older runs wrote them.
_TEXT = (str, type(None))
MANIFEST_KEYS = {
    "gpu": (dict,), "gpu_state": (list,), "cuda": _TEXT, "hip": _TEXT, "cudnn": (int, float, str, type(None)),
    "python": _TEXT, "torch": _TEXT, "triton": _TEXT, "tilelang": _TEXT, "flash_attn": _TEXT,
    "flash_mla": _TEXT, "flashinfer": _TEXT, "machine_id": _TEXT, "git_commit": _TEXT, "source_hash": _TEXT,
    "git_dirty": (bool, type(None)), "timestamp": (str,), "baselines": (dict,), "gate": (dict,),
    "sweep": (dict,), "quick": (dict,), "run_id": (str,), "hardware": (str,), "git": (dict,),
    "versions": (dict,),
}
KIND_NAMES = {dict: "object", list: "list", str: "text", int: "number", float: "number", bool: "true/false",
              type(None): "null"}
MANIFEST_REQUIRED = ("timestamp",)  # every manifest dates its run (captions take dates from it)
MANIFEST_MAX_BYTES = 256 * 1024  # a written manifest is a few KiB
MANIFEST_MAX_DEPTH = 5  # e.g. gate.tolerance.fp16.rel_l2
MANIFEST_MAX_ITEMS = 512  # keys of one object, items of one list
MANIFEST_MAX_TEXT = 4096  # characters of one key or text value


def shown(path) -> str:
    """A path for a one-line message: as it is, or escaped when it holds a control character."""
    text = Path(path).as_posix()
    return text if text.isprintable() else ascii(text)


def _damaged(path, what: str) -> StoreError:
    return StoreError(f"{shown(path)}: {what}; move it aside or fix it")


def _where(i: int, row: dict) -> str:
    return f"row {i + 1} ({ascii(str(row.get('case', '')))}, {ascii(str(row.get('backend', '')))})"


# Self-test results.

def is_selftest_folder(folder: Path) -> bool:
    return folder.name == SELFTEST_HARDWARE


def selftest_rows(frame: pd.DataFrame, experiment: str) -> pd.Series:
    """True for the rows the harness self-test wrote (its experiment, or the cpu stand-in hardware)."""
    mask = pd.Series(experiment in SELFTEST_EXPERIMENTS, index=frame.index)
    if "experiment" in frame:
        mask |= frame["experiment"].astype(str).isin(SELFTEST_EXPERIMENTS)
    if "hardware" in frame:
        mask |= frame["hardware"].astype(str) == SELFTEST_HARDWARE
    return mask


def is_selftest_file(path: Path, frame: pd.DataFrame) -> bool:
    """A self-test results file; one that mixes self-test rows with measured ones is refused."""
    mask = selftest_rows(frame, path.stem)
    if mask.any() and not mask.all():
        first = int(mask.to_numpy().argmax())
        raise _damaged(path, f"{_where(first, frame.iloc[first].to_dict())} is a self-test row "
                             f"(experiment {'/'.join(SELFTEST_EXPERIMENTS)} or hardware {SELFTEST_HARDWARE}) "
                             "among measured ones")
    return bool(mask.all()) and not frame.empty


# Names.

def check_folder_name(path: Path) -> None:
    """A hardware folder or experiment file names a card or an experiment: an identifier."""
    name = path.name if path.is_dir() else path.stem
    if not NAME.fullmatch(name):
        raise _damaged(path, f"{ascii(name)} is not a card or experiment name (letters, digits, '_', '.', '+', '-')")


def case_problem(case: str) -> Optional[str]:
    """Why `case` is not a `key=value,...` string the store's case parser reads whole (None if it is)."""
    if not case.isprintable():
        return "a control or non-printable character"
    keys = []
    for item in case.split(","):
        key, eq, value = item.partition("=")
        if not eq or not CASE_KEY.fullmatch(key) or not CASE_VALUE.fullmatch(value):
            return f"{ascii(item)} is not key=value"
        keys.append(key)
    if len(set(keys)) != len(keys):
        return "a parameter named twice"
    return None


def _name_problem(row: dict) -> Optional[str]:
    backend, case, run_id = (str(row.get(k, "")) for k in ("backend", "case", "run_id"))
    if not BACKEND.fullmatch(backend):
        return f"backend {ascii(backend)} is not a backend name (letters, digits, '_', '.', '+', '-')"
    problem = case_problem(case)
    if problem:
        return f"case {ascii(case)}: {problem}"
    if not RUN_ID.fullmatch(run_id):
        return f"run_id {ascii(run_id)} is not a run id (letters, digits, '.', '_', '-'; at most 64)"
    for column in ("experiment", "source"):  # captions and notes show them
        text = row.get(column)
        if isinstance(text, str) and not text.isprintable():
            return f"{column} {ascii(text)[:80]} has a control or non-printable character"
    return None


def check_names(path: Path, frame: pd.DataFrame) -> None:
    """Every row's backend, case and run id, as the store's own writers make them."""
    for i, row in enumerate(frame.to_dict("records")):
        problem = _name_problem(row)
        if problem:
            raise _damaged(path, f"{_where(i, row)}: {problem}")


# Figures.

def _raw(path: Path) -> pd.DataFrame:
    """The file's cells as written (an `inf` or `nan` spelled out is not an empty cell here)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _figure_problem(name: str, text: str, zero_ok: bool) -> Optional[str]:
    try:
        value = float(text)
    except ValueError:
        return f"{name}={text!r} is not a number"
    if not math.isfinite(value):
        return f"{name}={text} is not a finite number"
    if name in COUNTS:
        return None if value >= 1 and value.is_integer() else f"{name}={text} is not a whole count"
    if name in POSITIVE or (name in UNCOUNTED_ZERO and not zero_ok):
        return None if value > 0 else f"{name}={text} is not above zero"
    return None if value >= 0 else f"{name}={text} is negative"


def _uncounted(raw: pd.DataFrame, shown: pd.Series) -> set[str]:
    """The UNCOUNTED_ZERO columns that are zero in every shown row (the experiment counts none)."""
    zero = set()
    for name in UNCOUNTED_ZERO:
        if name in raw:
            cells = raw.loc[shown, name].str.strip()
            if len(cells) and (pd.to_numeric(cells, errors="coerce") == 0).all():
                zero.add(name)
    return zero


def check_figures(path: Path) -> None:
    """Every figure of an ok or reported row, as written: empty, or a number that can be true."""
    raw = _raw(path)
    if "status" not in raw:
        return
    shown = raw["status"].str.strip().isin(SHOWN)
    zero_ok = _uncounted(raw, shown)
    columns = [c for c in FIGURES if c in raw]
    for i, row in raw[shown].iterrows():
        for name in columns:
            text = row[name].strip()
            problem = _figure_problem(name, text, name in zero_ok) if text else None
            if problem:
                raise _damaged(path, f"{_where(raw.index.get_loc(i), row.to_dict())}: {problem}")


# Gates: an ok row judged more leniently than its experiment defines (configs/bench/default.yaml
# under configs/experiment/<name>.yaml) is no result of that experiment. Rows from before gates
# were stored (no `gate`) are not judged here.

@lru_cache(maxsize=None)
def _default_settings(experiment: str):
    """The experiment's own bench settings; None for an experiment without a config."""
    from repro.run.validate import ConfigError, default_settings

    try:
        return default_settings(experiment)
    except ConfigError:
        return None


def reference_gate(experiment: str, dtype) -> Optional[str]:
    """The gate a row of `experiment` should have passed: its dtype's default limits (without a
    dtype in the case, the loosest the experiment allows any dtype); None with no config."""
    settings = _default_settings(experiment)
    if settings is None:
        return None
    if dtype is not None and str(dtype) in settings.tolerance:
        return gate_of(settings, str(dtype))
    limits: dict = {"trials": int(settings.correctness_trials)}
    if settings.tolerance:
        limits["rel_l2"] = max(float(t.rel_l2) for t in settings.tolerance.values())
        limits["max_abs_rel"] = max(float(t.max_abs_rel) for t in settings.tolerance.values())
    return case_key(limits)


def _gate_problem(row: dict, experiment: str) -> Optional[str]:
    gate = row.get("gate")
    if row.get("status") != Status.OK.value or not isinstance(gate, str) or not gate.strip():
        return None
    reference = reference_gate(str(row.get("experiment") or experiment),
                               parse_case(str(row.get("case", ""))).get("dtype"))
    if reference is None:
        return None
    try:
        looser = looser_gate(gate, reference)
    except (TypeError, ValueError):
        return f"gate {ascii(gate)[:80]} is not key=value limits (trials, rel_l2, max_abs_rel)"
    if looser:
        return (f"passed a looser gate than the experiment's ({'; '.join(looser)}; its own: {reference}); "
                "measure it again with the experiment's gate")
    return None


def check_gates(path: Path, frame: pd.DataFrame) -> None:
    """Every ok row that records its gate, against its experiment's default gate."""
    if "gate" not in frame:
        return
    for i, row in enumerate(frame.to_dict("records")):
        problem = _gate_problem(row, path.stem)
        if problem:
            raise _damaged(path, f"{_where(i, row)}: {problem}")


def check_rows(path: Path, frame: pd.DataFrame) -> None:
    check_names(path, frame)
    check_figures(path)
    check_gates(path, frame)


# Manifests.

def _value_problem(value, where: str, depth: int) -> Optional[str]:
    if depth > MANIFEST_MAX_DEPTH:
        return f"{where}: nested deeper than {MANIFEST_MAX_DEPTH}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where}={value}: not a finite number"
    if isinstance(value, str) and (len(value) > MANIFEST_MAX_TEXT or not value.isprintable()):
        return f"{where}: text longer than {MANIFEST_MAX_TEXT} or with a control character"
    if isinstance(value, (dict, list)) and len(value) > MANIFEST_MAX_ITEMS:
        return f"{where}: more than {MANIFEST_MAX_ITEMS} items"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and (len(key) > MANIFEST_MAX_TEXT or not key.isprintable() or not key):
            return f"{where}: key {ascii(key)[:80]} is empty, too long or has a control character"
        problem = _value_problem(item, f"{where}.{key}", depth + 1)
        if problem:
            return problem
    return None


def manifest_problem(data: dict) -> Optional[str]:
    """Why a manifest is not one the runner writes (None when it is)."""
    unknown = sorted(set(data) - set(MANIFEST_KEYS))
    if unknown:
        return f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(ascii(k) for k in unknown[:5])}"
    for key in MANIFEST_REQUIRED:
        if key not in data:
            return f"no `{key}`"
    for key, value in data.items():
        kinds = MANIFEST_KEYS[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            allowed = " or ".join(dict.fromkeys(KIND_NAMES[k] for k in kinds))
            return f"`{key}` must be {allowed}, not {type(value).__name__}"
    if any(not isinstance(item, dict) for item in data.get("gpu_state") or []):
        return "`gpu_state` must be a list of objects"
    try:
        dt.datetime.fromisoformat(data["timestamp"])
    except ValueError:
        return f"`timestamp` {ascii(data['timestamp'])[:40]} is not an ISO 8601 date and time"
    return _value_problem(data, "manifest", 0)


def read_manifest(path: Path) -> dict:
    """One run's manifest through the store's reader, then bounded and checked field by field."""
    size = os.stat(path).st_size
    if size > MANIFEST_MAX_BYTES:
        raise _damaged(path, f"a run manifest of {size} bytes (a run writes about 1 KiB; at most "
                             f"{MANIFEST_MAX_BYTES})")
    data = mf.read_manifest(path)
    problem = manifest_problem(data)
    if problem:
        raise _damaged(path, f"not a run manifest as the runner writes it: {problem}")
    return data


def read_manifests(folder: Path) -> dict[str, dict]:
    """run id -> checked manifest, for every env-*.json in one hardware folder."""
    return {mf.run_id_of(p): read_manifest(p) for p in sorted(folder.glob(f"{mf.PREFIX}*{mf.SUFFIX}"))}


