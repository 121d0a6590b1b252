"""Fault isolation: one (case, backend) in a child process with a time limit.

A CUDA fault poisons its process's context for good, and a hung kernel never returns; in a child,
either becomes a status row and the sweep goes on in a healthy parent.
"""
from __future__ import annotations

import multiprocessing as mp
import queue


def _child(exp_name: str, backend: str, case: dict, settings: dict, hw: dict, out: mp.Queue) -> None:
    from repro.experiment import load_experiment
    from repro.measure import measure

    exp = load_experiment(exp_name)
    out.put(measure(exp, exp.backend(backend), case, settings, hw))


def measure_isolated(exp_name: str, backend: str, case: dict, settings: dict, hw: dict) -> dict:
    ctx = mp.get_context("spawn")  # never fork a process that holds a CUDA context
    out = ctx.Queue()
    proc = ctx.Process(target=_child, args=(exp_name, backend, case, settings, hw, out), daemon=True)
    proc.start()
    limit = float(settings["timeout_s"])
    try:
        result = out.get(timeout=limit)
    except queue.Empty:
        result = None
    proc.join(timeout=5 if result is not None else 0.1)
    if proc.is_alive():
        proc.kill()
        proc.join()
        if result is None:
            return {"status": "timeout", "error": f"no result within bench.timeout_s={limit:g} s; child killed"}
    if result is None:
        code = proc.exitcode
        return {"status": "error", "error": f"child process died (exit code {code}) before reporting"}
    return result
