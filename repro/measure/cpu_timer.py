"""A wall-clock timer for the CPU device, which only the harness self-test (experiment=selftest) uses.

Every GPU measurement goes through repro/measure/timer.py's device-event timer; this one exists so the
CPU tests can drive the real runner, gate and isolation end to end on a machine without a GPU.
"""
from __future__ import annotations

import time
from typing import Callable

from repro.measure.settings import TimerSettings
from repro.measure.timer import Timing, rep_count, summarize


def time_cpu(fn: Callable[[], object], timing: TimerSettings, flusher=None) -> Timing:
    """Median wall time of fn() with the same warm-up and repetition rules as the GPU timer
    (the L2 flush and CUDA graphs are device matters: ignored here)."""
    start, n_warm = time.perf_counter(), 0
    while True:
        fn()
        n_warm += 1
        elapsed_ms = (time.perf_counter() - start) * 1e3
        if elapsed_ms >= timing.warmup_ms or n_warm >= 1000:
            break
    samples = []
    for _ in range(rep_count(elapsed_ms / n_warm, timing.rep_ms, timing.min_reps, timing.max_reps)):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return summarize(samples)
