"""The one timer every backend goes through: device events, warm-up, L2 flush, robust statistics."""
from __future__ import annotations

import functools
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from repro.measure.settings import TimerSettings


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p25_ms: float
    p75_ms: float
    min_ms: float
    max_ms: float
    reps: int
    samples_ms: tuple = ()  # the repetitions, in order (pooled over interleaved trials)

    @property
    def iqr_ms(self) -> float:
        return self.p75_ms - self.p25_ms


def quantile(sorted_samples: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of already sorted samples (numpy's default method)."""
    if not sorted_samples:
        raise ValueError("no samples")
    pos = q * (len(sorted_samples) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_samples) - 1)
    return sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * (pos - lo)


def summarize(samples_ms: Sequence[float]) -> Timing:
    s = sorted(float(x) for x in samples_ms)
    if not s:
        raise ValueError("no timing samples")
    return Timing(statistics.median(s), quantile(s, 0.25), quantile(s, 0.75), s[0], s[-1], len(s),
                  tuple(float(x) for x in samples_ms))


def rep_count(estimate_ms: float, rep_ms: float, min_reps: int, max_reps: int) -> int:
    """Enough repetitions to fill about `rep_ms` of device time, within [min_reps, max_reps]."""
    if estimate_ms <= 0:
        return max_reps
    return max(min_reps, min(max_reps, int(rep_ms / estimate_ms)))


class L2Flusher:
    """Writes a buffer larger than the L2 cache so that every repetition starts cold."""

    def __init__(self, device: str = "cuda", megabytes: int = 256):
        import torch

        self._buf = torch.empty(megabytes * (1 << 20) // 4, dtype=torch.int32, device=device)

    def __call__(self) -> None:
        self._buf.zero_()


def _graph_of(fn: Callable[[], object]):
    """Capture fn in a CUDA graph (after a warm-up on a side stream, as PyTorch requires)."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def time_cuda(fn: Callable[[], object], timing: TimerSettings, flusher: L2Flusher | None = None) -> Timing:
    """Median device time of fn() over repetitions, each bracketed by its own pair of events.

    Every knob comes from `timing` (the run's `bench` settings; their values live only in
    configs/bench/*.yaml). The flush runs before the start event, so it is never part of a sample.
    With cuda_graph, fn is captured once and its replays are timed: launch overhead drops out.
    """
    import torch

    call = _graph_of(fn) if timing.cuda_graph else fn
    flush = (flusher or L2Flusher()) if timing.flush_l2 else (lambda: None)
    # Warm-up: module loading, autotuners and lazy init stay out of the samples, and so does the
    # clock's climb from idle: the calls (each after its flush, as sampled) go in growing batches
    # with no sync inside one, so a microsecond kernel keeps the device busy for warmup_ms too
    # (one call and a sync at a time left it mostly idle: the MLA short grid's 15 us kernels read
    # 15 to 70 us from run to run on the H200, FlashMLA's as much as ours).
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    call()
    torch.cuda.synchronize()
    start.record()
    n_warm, batch, host_ms = 0, 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(batch):
            flush()
            call()
        if batch > 1:  # the first call of a batch of one may still carry lazy setup
            host_ms = max(host_ms, (time.perf_counter() - t0) * 1e3 / batch)
        n_warm += batch
        end.record()
        end.synchronize()
        if start.elapsed_time(end) >= timing.warmup_ms or n_warm >= 4000:
            break
        batch = min(2 * batch, 64)
    estimate = start.elapsed_time(end) / n_warm  # a sample's device time, its flush included
    reps = rep_count(estimate, timing.rep_ms, timing.min_reps, timing.max_reps)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    # The host's launch time stays out of the samples: after each flush a spin kernel holds the
    # device for twice the host's time per call (as measured in the warm-up), so the device falls
    # behind the host and every call is queued before its start event is reached. Without it a
    # kernel shorter than the host's launch path (Python launchers: 20-60 us) was sampled with the
    # idle gap in front of it, at random: the MLA short grid read 18 or 37 us for one kernel.
    # (A call that waits on the device itself has no launch time to hide: the hold stops at 1 ms.)
    host_ms = min(host_ms, 0.5)
    hold = _hold(host_ms)
    hold(min(2.0 + 2 * host_ms * reps, 20.0))  # first, a backlog against the host's hiccups
    for i in range(reps):
        flush()
        hold(2 * host_ms)
        starts[i].record()
        call()
        ends[i].record()
    torch.cuda.synchronize()
    return summarize([s.elapsed_time(e) for s, e in zip(starts, ends)])


@functools.lru_cache(maxsize=None)
def _cycles_per_ms() -> float:
    """The spin kernel's clock, measured once per process."""
    import torch

    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(1 << 20)  # the clock climbs first
    a.record()
    torch.cuda._sleep(1 << 22)
    b.record()
    b.synchronize()
    return (1 << 22) / max(a.elapsed_time(b), 1e-3)


def _hold(host_ms: float) -> Callable[[float], None]:
    """hold(ms): a spin kernel busy for about `ms` on the current stream (torch.cuda._sleep; a
    no-op where that is missing or the host needs no hold)."""
    import torch

    sleep = getattr(torch.cuda, "_sleep", None)
    if sleep is None or host_ms <= 0:
        return lambda ms: None
    per_ms = _cycles_per_ms()
    return lambda ms: sleep(int(ms * per_ms))
