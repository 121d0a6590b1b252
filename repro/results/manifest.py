"""The environment manifest written beside each run's rows: what ran, where, with which software."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import subprocess
from pathlib import Path

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


def write(manifest: dict, directory: Path, run_id: str) -> Path:
    path = Path(directory) / f"env-{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path
