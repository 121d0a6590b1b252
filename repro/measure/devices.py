"""One GPU per job: which GPUs a node has, and an exclusive claim on one of them.

Parallel jobs of a sweep (Hydra's joblib launcher, or several sweeps on one node) must never
time on the same GPU. Each job claims a GPU with an advisory lock on a node-local file before
CUDA starts, then narrows CUDA_VISIBLE_DEVICES to it; a second job waits for a free GPU. The
lock dies with its process, so a killed job never leaves a GPU claimed. Under SLURM the
scheduler already gives each job its own GPUs, and nothing is locked.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

VISIBLE = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
_pinned: Optional[str] = None  # the GPU this process narrowed itself to; CUDA allows no second choice


def lock_dir() -> Path:
    return Path(os.environ.get("REPRO_GPU_LOCKS") or Path(tempfile.gettempdir()) / "tilelang-repro-gpu-locks")


def _count_from_tools() -> int:
    """GPUs on the node without starting CUDA here: nvidia-smi, else torch in a throwaway process."""
    probes = (["nvidia-smi", "-L"], [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"])
    for cmd in probes:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout.strip()
        except Exception:
            continue
        if cmd[0] == "nvidia-smi":
            return sum(1 for line in out.splitlines() if line.startswith("GPU "))
        return int(out.splitlines()[-1]) if out else 0
    return 0


def visible_gpus() -> list[str]:
    """Device tokens this process may use (indices or UUIDs, as CUDA_VISIBLE_DEVICES names them)."""
    for var in VISIBLE:
        value = os.environ.get(var)
        if value is not None:
            tokens = [t.strip() for t in value.split(",") if t.strip()]
            return [] if tokens[:1] == ["-1"] else tokens
    return [str(i) for i in range(_count_from_tools())]


def node_gpus() -> list[str]:
    """The GPUs this job could choose from, even after it narrowed itself to one of them."""
    claimed_from = os.environ.get("REPRO_NODE_GPUS")
    return claimed_from.split(",") if claimed_from else visible_gpus()


def gpu_count_for_jobs() -> int:
    """`hydra.launcher.n_jobs` for one job per GPU (1 on a machine without GPUs: dry runs, self-test)."""
    return max(1, len(visible_gpus()))


def _try_lock(token: str):
    path = lock_dir() / f"gpu-{token}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}\n")
    fh.flush()
    return fh


def _narrow_to(token: str, candidates: list[str]) -> None:
    global _pinned
    os.environ.setdefault("REPRO_NODE_GPUS", ",".join(candidates))
    if _pinned is None and "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
        print(f"warning: CUDA started before a GPU was claimed; GPU {token} is locked but not enforced",
              file=sys.stderr)
    for var in VISIBLE:
        os.environ[var] = token
    _pinned = token


@contextmanager
def exclusive_gpu(label: str = "", poll_s: float = 2.0) -> Iterator[Optional[str]]:
    """Claim one GPU for the duration of a job; yields its token (None: no GPU to claim)."""
    candidates = [_pinned] if _pinned is not None else visible_gpus()
    if not candidates:
        yield None
        return
    waited = 0.0
    while True:
        for token in candidates:
            fh = _try_lock(token)
            if fh is not None:
                break
        else:
            if waited == 0.0:
                print(f"{label}waiting for a free GPU among {','.join(candidates)}", file=sys.stderr)
            time.sleep(poll_s)
            waited += poll_s
            continue
        break
    try:
        _narrow_to(token, candidates)
        print(f"{label}on GPU {token}" + (f" (after waiting {waited:.0f} s)" if waited else ""))
        yield token
    finally:
        fh.close()  # releases the lock; this process stays narrowed to the same GPU for its next job
