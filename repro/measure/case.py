"""Measuring one case: per backend probe, gate on fresh inputs, then interleaved timing trials. Returns result rows."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from repro.measure.child import exception_text
from repro.measure.cpu_timer import time_cpu
from repro.measure.experiment import Backend, Experiment
from repro.measure.gate import default_check, poison_allocator, poison_outputs
from repro.measure.settings import BenchSettings
from repro.measure.stats import join_trials
from repro.measure.timer import L2Flusher, summarize, time_cuda


def _gate(exp: Experiment, backend: Backend, case: dict, settings: BenchSettings, device: str):
    """Run the correctness trials; returns (fn, inputs, figures) for timing, figures['passed'] telling."""
    import torch

    tol = settings.tolerance_for(str(case.get("dtype", exp.flops_dtype(case))))
    worst = {"passed": True, "error": "", "rel_l2": 0.0, "max_abs": 0.0}
    fn = inputs = None
    for trial in range(settings.correctness_trials):
        fn = inputs = None  # free the previous trial's buffers first
        inputs = exp.make_inputs(case, settings.seed + trial, device)
        ref = exp.reference(case, inputs)
        fn = backend.build(case, inputs)
        poison_outputs(inputs)
        poison_allocator(min(2 * exp.bytes(case), 8 << 30), device)
        out = fn()
        if device != "cpu":  # the CPU device serves only the harness self-test
            torch.cuda.synchronize()
        figures = exp.check(case, inputs, out, ref) if exp.check else default_check(out, ref, tol)
        del out, ref
        worst["rel_l2"] = max(worst["rel_l2"], figures.get("rel_l2", 0.0))
        worst["max_abs"] = max(worst["max_abs"], figures.get("max_abs", 0.0))
        worst["note"] = figures.get("note") or worst.get("note", "")  # an output not compared (NotReturned)
        if not figures["passed"]:
            return fn, inputs, {**worst, "passed": False, "error": f"trial {trial}: {figures['error']}"}
    return fn, inputs, worst


def _throughput(exp: Experiment, case: dict, ms: float, hw: Mapping) -> dict:
    tflops = exp.flops(case) / (ms * 1e-3) / 1e12
    gbps = exp.bytes(case) / (ms * 1e-3) / 1e9
    peak = hw.get("peak_tflops", {}).get(exp.flops_dtype(case))
    tf_frac = tflops / peak if peak else math.nan
    bw_frac = gbps / (hw["hbm_tbps"] * 1e3) if hw.get("hbm_tbps") else math.nan
    # Roofline fraction: the lower bound max(flops/peak, bytes/bandwidth) over the measured time.
    roof = max(x for x in (tf_frac, bw_frac, 0.0) if not math.isnan(x))
    return {"tflops": tflops, "gbps": gbps, "tflops_frac": tf_frac, "bw_frac": bw_frac, "roofline_frac": roof}


def _failure(exc: BaseException) -> dict:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return {"status": "oom", "error": f"out of memory: {str(exc).splitlines()[0][:300]}"}
    return {"status": "error", "error": exception_text(exc)}


def _ready(exp: Experiment, backend: Backend, case: dict, settings: BenchSettings, hw: Mapping, device: str):
    """Probe and gate one backend: (final row, None) when it will not be timed, else (row so far, fn)."""
    reason = backend.refuses(case) or backend.probe() or backend.unavailable_on(hw)
    if reason:
        return {"status": "skipped", "error": f"skipped: {reason}"}, None
    try:
        fn, inputs, figures = _gate(exp, backend, case, settings, device)
    except Exception as exc:
        return _failure(exc), None
    row = {"rel_l2": figures["rel_l2"], "max_abs": figures["max_abs"]}
    if figures.get("note"):
        row["error"] = figures["note"]  # on an ok row: what the gate did not compare
    if not figures["passed"]:
        return {**row, "status": "incorrect", "error": figures["error"]}, None
    if not backend.timed:
        return {**row, "status": "ok", "error": "reference only: not timed"}, None
    return row, (fn, inputs)  # inputs stay alive while fn is timed


def measure_case(exp: Experiment, backends: Sequence[Backend], case: dict, settings: BenchSettings, hw: Mapping,
                 flusher: L2Flusher | None = None, device: str = "cuda",
                 clock: dict | None = None) -> dict[str, dict[str, Any]]:
    """Measure several backends of one case: gate each, then `settings.trials` timing trials
    interleaved over the backends that passed (A B C, B C A, ...), so that a drifting machine
    touches every backend alike. A row's figures come from its pooled samples; `trial_ms` keeps
    each trial's median for the paired ratio intervals (repro/measure/stats.py).
    Never raises for a backend's own failure: each row's status says what happened. `clock`, when
    given, accumulates the seconds spent gating (first compiles included) and timing."""
    import time

    import torch

    rows, ready = {}, {}
    clock = clock if clock is not None else {}
    try:
        start = time.perf_counter()
        for backend in backends:
            rows[backend.name], fn = _ready(exp, backend, case, settings, hw, device)
            if fn is not None:
                ready[backend.name] = fn
        gated = time.perf_counter()
        clock["gate_s"] = clock.get("gate_s", 0.0) + gated - start
        timer = time_cuda if device != "cpu" else time_cpu
        trials: dict[str, list] = {name: [] for name in ready}
        order = list(ready)
        for t in range(settings.trials):
            for name in order[t % len(order):] + order[:t % len(order)] if order else []:
                if name not in ready:
                    continue
                try:
                    trials[name].append(timer(ready[name][0], settings.trial_timer, flusher))
                except Exception as exc:  # a failure while timing: the backend leaves the case
                    rows[name] = {**rows[name], **_failure(exc)}
                    ready.pop(name)
        clock["timing_s"] = clock.get("timing_s", 0.0) + time.perf_counter() - gated
        for name in ready:
            if exp.artifacts:
                rows[name]["artifacts"] = exp.artifacts(case, name, ready[name][1])
            pooled = summarize([x for timing in trials[name] for x in timing.samples_ms])
            rows[name] = {**rows[name], "status": "ok", "median_ms": pooled.median_ms, "p25_ms": pooled.p25_ms,
                          "p75_ms": pooled.p75_ms, "min_ms": pooled.min_ms, "reps": pooled.reps,
                          "trials": len(trials[name]), "trial_ms": join_trials([x.median_ms for x in trials[name]]),
                          **_throughput(exp, case, pooled.median_ms, hw)}
        return rows
    finally:
        ready.clear()
        torch.cuda.empty_cache()


def measure(exp: Experiment, backend: Backend, case: dict, settings: BenchSettings, hw: Mapping,
            flusher: L2Flusher | None = None, device: str = "cuda") -> dict[str, Any]:
    """One backend of one case (its trials back to back): the isolated child's measurement."""
    return measure_case(exp, [backend], case, settings, hw, flusher, device)[backend.name]
