"""The environment manifest written beside each run's rows: what ran, where, with which software.

results/<hardware>/env-<run_id>.json, a JSON object; written once the run's first row is stored
(a run refused before that leaves none), read back through `read_manifest`, which refuses a
damaged one as the store refuses a damaged results file.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
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
    """Write (atomically) the manifest of one run."""
    path = path_of(directory, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
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


def read_manifest(path: Path) -> dict:
    """One run's manifest, checked: a JSON object whose run id (if recorded) is the file's own."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _damaged(path, f"unreadable run manifest ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise _damaged(path, f"a run manifest must be a JSON object, this one is a {type(data).__name__}")
    recorded = data.get("run_id")
    if recorded is not None and str(recorded) != run_id_of(path):
        raise _damaged(path, f"run_id {recorded!r} does not match the file name")
    for key, kind in (("gpu", dict), ("gpu_state", list), ("timestamp", str)):
        if data.get(key) is not None and not isinstance(data[key], kind):
            raise _damaged(path, f"`{key}` must be a JSON {'object' if kind is dict else kind.__name__}")
    return data


def read_manifests(directory: Path) -> dict[str, dict]:
    """run id -> manifest, for every env-*.json in one hardware folder (sorted by file name)."""
    return {run_id_of(p): read_manifest(p) for p in sorted(Path(directory).glob(f"{PREFIX}*{SUFFIX}"))}
