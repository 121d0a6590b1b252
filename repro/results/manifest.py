"""The environment manifest written beside each run's rows: what ran, where, with which software.

results/<hardware>/env-<run_id>.json, a JSON object; written once the run's first row is stored
(a run refused before that leaves none), read back through `read_manifest`, which refuses a
damaged one as the store refuses a damaged results file.

The schema (`SCHEMA`, checked by `manifest_problems` / `check_manifest` on write and on read): a
`timestamp` (ISO 8601) is required; every other key is one of SCHEMA's, of its type; no NaN or
infinite number anywhere; bounded size, depth and text. `gate` holds the gate settings the run's
verdicts were reached with (repro.results.store.gate_settings) and their `key`.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from repro.results.store import StoreError

PREFIX, SUFFIX = "env-", ".json"

ROOT = Path(__file__).resolve().parents[2]


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except Exception:
        return None


def _nvidia_smi(query: str) -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        return [line.strip() for line in out.strip().splitlines()]
    except Exception:
        return []


def machine_id() -> str:
    """A stable id for the machine that names no host: a hash of its GPU UUIDs (or platform)."""
    uuids = _nvidia_smi("uuid")
    basis = ",".join(uuids) if uuids else platform.machine() + platform.processor()
    return hashlib.sha256(basis.encode()).hexdigest()[:12]


def collect() -> dict:
    import torch

    gpu = {}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": props.name, "count": torch.cuda.device_count(), "sm_count": props.multi_processor_count,
               "memory_gib": round(props.total_memory / 2**30, 1),
               "capability": f"{props.major}.{props.minor}"}
    smi = _nvidia_smi("driver_version,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit,"
                      "persistence_mode,temperature.gpu")
    fields = ["driver", "clock_sm_mhz", "clock_sm_max_mhz", "clock_mem_mhz", "clock_mem_max_mhz",
              "power_limit_w", "persistence_mode", "temperature_c"]
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "gpu": gpu,
        "gpu_state": [dict(zip(fields, line.split(", "))) for line in smi],
        "cuda": torch.version.cuda, "hip": getattr(torch.version, "hip", None), "cudnn": cudnn,
        "python": platform.python_version(), "torch": torch.__version__,
        "triton": _version("triton"), "tilelang": _version("tilelang"),
        "flash_attn": _version("flash_attn") or _version("flash-attn"),
        "flash_mla": _version("flash_mla") or _version("flash-mla"), "flashinfer": _version("flashinfer-python"),
        "machine_id": machine_id(), "git_commit": _git("rev-parse", "HEAD"),
        # Identifies the sources even where the copy that ran has no git metadata.
        "source_hash": code_hash(p for d in ("repro", "experiments", "kernels", "configs")
                                 for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".yaml")),
        "git_dirty": bool(dirty) if dirty is not None else None,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def env_key(manifest: dict) -> str:
    """What must match for a stored row to count as measured in the same environment."""
    basis = [manifest["gpu"].get("name"), (manifest["gpu_state"] or [{}])[0].get("driver"), manifest["cuda"],
             manifest["torch"], manifest["triton"], manifest["tilelang"]]
    return hashlib.sha256(json.dumps(basis).encode()).hexdigest()[:12]


def code_hash(paths) -> str:
    """Hash of the sources an experiment's numbers depend on (harness, experiment, kernels)."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        if p.exists():
            h.update(p.relative_to(ROOT).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def path_of(directory: Path, run_id: str) -> Path:
    return Path(directory) / f"{PREFIX}{run_id}{SUFFIX}"


def run_id_of(path: Path) -> str:
    return Path(path).name.removeprefix(PREFIX).removesuffix(SUFFIX)


def write(manifest: dict, directory: Path, run_id: str) -> Path:
    """Write (atomically) the manifest of one run; one that would not read back is refused (StoreError)."""
    path = path_of(directory, run_id)
    check_manifest(manifest, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n")
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; manifests are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _damaged(path: Path, what: str) -> StoreError:
    return StoreError(f"{path}: {what}; move it aside or fix it")


# --- the schema ------------------------------------------------------------------------------------

MAX_BYTES = 1 << 20  # a manifest is a few KiB
MAX_DEPTH = 5  # e.g. gate.tolerance.fp16.rel_l2
MAX_ITEMS = 512  # entries of one object or list
MAX_TEXT = 4096  # characters of one string
TEXT, NUMBER, FLAG, OBJECT, LIST = "text", "number", "true/false", "object", "list"


def _is(value, kind: str) -> bool:
    if kind == TEXT:
        return isinstance(value, str)
    if kind == NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == FLAG:
        return isinstance(value, bool)
    return isinstance(value, dict if kind == OBJECT else list)


# Every key a manifest may hold, with its kinds (None: may be null). `collect()` writes most; the
# runner adds baselines, gate and sweep, the quick scoreboard `quick`; run_id, hardware, git and
# versions are the older layout's (tests/fixtures).
SCHEMA: dict[str, tuple] = {
    "timestamp": (TEXT,),
    "gpu": (OBJECT,), "gpu_state": (LIST,),
    "cuda": (TEXT, None), "hip": (TEXT, None), "cudnn": (NUMBER, TEXT, None), "python": (TEXT, None),
    "torch": (TEXT, None), "triton": (TEXT, None), "tilelang": (TEXT, None), "flash_attn": (TEXT, None),
    "flash_mla": (TEXT, None), "flashinfer": (TEXT, None),
    "machine_id": (TEXT, None), "git_commit": (TEXT, None), "git_dirty": (FLAG, None), "source_hash": (TEXT, None),
    "baselines": (OBJECT,), "gate": (OBJECT,), "sweep": (OBJECT,), "quick": (OBJECT,),
    "run_id": (TEXT,), "hardware": (TEXT,), "git": (OBJECT,), "versions": (OBJECT,),
}
REQUIRED_KEYS = ("timestamp",)


def _value_problems(value, where: str, depth: int = 0) -> list[str]:
    """NaN or infinite numbers, over-long text, too deep or too large containers, anywhere."""
    if depth > MAX_DEPTH:
        return [f"`{where}` is nested deeper than {MAX_DEPTH} levels"]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"`{where}` is {value!r} (a manifest holds finite numbers only)"]
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return [f"`{where}` is {len(value)} characters long (at most {MAX_TEXT})"]
    if isinstance(value, (dict, list)):
        if len(value) > MAX_ITEMS:
            return [f"`{where}` holds {len(value)} entries (at most {MAX_ITEMS})"]
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return [p for k, v in items for p in _value_problems(v, f"{where}.{k}", depth + 1)]
    return []


def _gate_problems(gate: dict) -> list[str]:
    """`gate`: correctness_trials (a positive integer), tolerance (dtype -> rel_l2, max_abs_rel > 0), key."""
    problems = []
    trials = gate.get("correctness_trials")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        problems.append(f"`gate.correctness_trials` is {trials!r}, not a positive integer")
    tolerance = gate.get("tolerance")
    if not isinstance(tolerance, dict) or not tolerance:
        problems.append("`gate.tolerance` must be an object of dtype -> {rel_l2, max_abs_rel}")
    else:
        for dtype, tol in tolerance.items():
            limits = [tol.get(k) for k in ("rel_l2", "max_abs_rel")] if isinstance(tol, dict) else [None]
            if not all(_is(x, NUMBER) and x > 0 for x in limits):
                problems.append(f"`gate.tolerance.{dtype}` must hold positive rel_l2 and max_abs_rel")
    if not isinstance(gate.get("key"), str):
        problems.append("`gate.key` must be text")
    return problems


def _sweep_problems(sweep: dict) -> list[str]:
    """`sweep`: its experiment, and non-negative seconds and counts (the estimate divides by them)."""
    problems = [] if isinstance(sweep.get("experiment"), str) else ["`sweep.experiment` must be text"]
    for key, value in sweep.items():
        if key != "experiment" and not (_is(value, NUMBER) and value >= 0):
            problems.append(f"`sweep.{key}` is {value!r}, not a number >= 0")
    return problems


def _timestamp_problems(value) -> list[str]:
    try:
        dt.datetime.fromisoformat(str(value))
    except ValueError:
        return [f"`timestamp` {str(value)[:40]!r} is not an ISO 8601 time"]
    return []


def manifest_problems(data) -> list[str]:
    """What is wrong with a manifest under SCHEMA (empty when nothing is)."""
    if not isinstance(data, dict):
        return [f"a run manifest must be a JSON object, this one is a {type(data).__name__}"]
    problems = [f"no `{key}`" for key in REQUIRED_KEYS if key not in data]
    unknown = [str(k) for k in data if k not in SCHEMA]
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:3])
        shown += f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        problems.append(f"unknown key(s) {shown} (known: {', '.join(SCHEMA)})")
    for key, kinds in SCHEMA.items():
        if key not in data:
            continue
        value = data[key]
        if not (value is None and None in kinds) and not any(k is not None and _is(value, k) for k in kinds):
            problems.append(f"`{key}` must be {' or '.join(k or 'null' for k in kinds)}, not {type(value).__name__}")
        elif key == "gpu_state" and not all(isinstance(x, dict) for x in value):
            problems.append("`gpu_state` must be a list of objects (one per GPU)")
        elif key == "timestamp":
            problems += _timestamp_problems(value)
        elif key == "gate":
            problems += _gate_problems(value)
        elif key == "sweep":
            problems += _sweep_problems(value)
    problems += _value_problems(data, "manifest")
    return problems


def check_manifest(data, where: str | Path = "run manifest") -> dict:
    """`data` if it is a valid manifest; else StoreError naming `where` and the first problems."""
    problems = manifest_problems(data)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise _damaged(Path(where), "; ".join(problems[:3]) + more)
    return data


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number a manifest may hold")


def read_manifest(path: Path) -> dict:
    """One run's manifest, checked: a JSON object under SCHEMA whose run id (if recorded) is the
    file's own. Anything else raises StoreError (one line, naming the file)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise _damaged(path, f"{path.stat().st_size} bytes; a run manifest is at most {MAX_BYTES}")
        data = json.loads(path.read_text(), parse_constant=_no_constant)
    except StoreError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _damaged(path, f"unreadable run manifest ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise _damaged(path, f"a run manifest must be a JSON object, this one is a {type(data).__name__}")
    recorded = data.get("run_id")
    if recorded is not None and str(recorded) != run_id_of(path):
        raise _damaged(path, f"run_id {str(recorded)[:80]!r} does not match the file name")
    return check_manifest(data, path)


def read_manifests(directory: Path) -> dict[str, dict]:
    """run id -> manifest, for every env-*.json in one hardware folder (sorted by file name)."""
    return {run_id_of(p): read_manifest(p) for p in sorted(Path(directory).glob(f"{PREFIX}*{SUFFIX}"))}
