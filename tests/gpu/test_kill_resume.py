"""On the GPU: kill -9 one worker of a parallel sweep, rerun, and lose nothing that was written.

The sweep is the one `make measure` runs on a node with several GPUs (joblib launcher, one shard
per GPU); on a single GPU it is one shard. After the kill every row written so far must still be
there, unchanged, and the rerun must measure only what was missing.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from repro.measure.devices import visible_gpus
from repro.results.store import read_results

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]
SHAPES = "[[256,256,256],[512,512,512],[768,768,768],[1024,1024,1024],[1536,1536,1536],[2048,2048,2048]," \
         "[2560,2560,2560],[3072,3072,3072]]"


def _rows(root: Path) -> pd.DataFrame:
    frames = [read_results(p) for p in sorted(root.glob("*/*.csv")) + sorted(root.glob("*/parts/*.csv"))]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=["case", "backend", "run_id", "status"])
    rows = pd.concat(frames, ignore_index=True)
    return rows[rows["status"] != "reported"].drop_duplicates(["case", "backend"], keep="last")


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        out += [int(k) for k in kids]
        todo += [int(k) for k in kids]
    return out


def _worker(pid: int) -> int | None:
    """A descendant that measures: a Python process with CUDA loaded (not the launcher's helpers)."""
    for child in _descendants(pid):
        try:
            maps = Path(f"/proc/{child}/maps").read_text()
        except OSError:
            continue
        if "libcuda" in maps:
            return child
    return None


def test_kill_one_worker_then_resume(tmp_path):
    gpus = max(1, min(2, len(visible_gpus())))
    shards = ",".join(f"{i}/{gpus}" for i in range(gpus))
    cmd = [sys.executable, "run.py", "-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={gpus}",
           "experiment=gemm", f"++shard={shards}", "dtype=bf16", "backends=[cublas,tilelang]", "search=false",
           "bench.rep_ms=400", "bench.warmup_ms=100", "bench.correctness_trials=2",
           f"shapes={SHAPES}", f"results_dir={tmp_path}", f"hydra.sweep.dir={tmp_path}/multirun"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline, victim = time.monotonic() + 300, None
    while time.monotonic() < deadline and proc.poll() is None:
        if len(_rows(tmp_path)) >= 3 and (victim := _worker(proc.pid)) is not None:
            break
        time.sleep(0.2)
    if victim is None:
        out = proc.stdout.read().decode(errors="replace") if proc.poll() is not None else ""
        raise AssertionError(f"no worker with rows to kill (exit {proc.poll()}): {out[-2000:]}")
    os.kill(victim, signal.SIGKILL)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _rows(tmp_path)
    total = 8 * 2
    assert 3 <= len(before) < total, f"{len(before)} rows after the kill"
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    after = _rows(tmp_path).set_index(["case", "backend"])
    assert len(after) == total and set(after["status"]) == {"ok"}
    kept = after.loc[before.set_index(["case", "backend"]).index]
    assert (kept["run_id"].values == before["run_id"].values).all(), "a row written before the kill was redone"
