"""The harness self-test: a CPU matrix product with deliberately faulty backends.

Not a benchmark. It lets the CPU tests drive the real runner, gate, isolation, sharding, merge
and resume end to end without a GPU: its device is the CPU (config `device: cpu`, allowed for
this experiment alone) and its faulty backends stand for kernels that crash, hang, run out of
memory, raise or compute the wrong thing. FLOPs = 2*n^3; bytes = 3*n^2*4 (fp32).
"""
from __future__ import annotations

import os
import time

from repro.measure.experiment import Backend, Experiment


def cases(cfg) -> list[dict]:
    sizes = list(cfg.sizes)
    if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in sizes):
        raise ValueError(f"sizes: {sizes} must be a list of positive integers")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"sizes: {sizes} lists a size twice")
    return [{"n": n, "dtype": "fp32"} for n in sizes]


def make_inputs(case: dict, seed: int, device: str) -> dict:
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    n = case["n"]
    return {"a": torch.randn(n, n, generator=g, device=device), "b": torch.randn(n, n, generator=g, device=device),
            "out": torch.empty(n, n, device=device)}


def reference(case: dict, inputs: dict):
    return inputs["a"].double() @ inputs["b"].double()


def flops(case: dict) -> float:
    return 2.0 * case["n"] ** 3


def bytes_moved(case: dict) -> float:
    return 3.0 * case["n"] ** 2 * 4


def build_matmul(case: dict, inputs: dict):
    import torch

    a, b, out = inputs["a"], inputs["b"], inputs["out"]
    return lambda: torch.matmul(a, b, out=out)


def build_einsum(case: dict, inputs: dict):
    """A second correct implementation: paired timing trials and ratio intervals need two."""
    import torch

    a, b, out = inputs["a"], inputs["b"], inputs["out"]
    return lambda: out.copy_(torch.einsum("ik,kj->ij", a, b))


def build_wrong(case: dict, inputs: dict):
    out = inputs["out"]
    return lambda: out.zero_()  # must be caught by the gate as `incorrect`


def build_crash(case: dict, inputs: dict):
    os.abort()  # stands for a kernel that takes its process down (SIGABRT)


def build_hang(case: dict, inputs: dict):
    time.sleep(10**6)  # stands for a kernel that never returns


def build_oom(case: dict, inputs: dict):
    import torch

    raise torch.cuda.OutOfMemoryError("selftest: simulated allocation failure")


def build_raises(case: dict, inputs: dict):
    raise RuntimeError("selftest: a backend that raises")


def _cpu():
    return None  # usable wherever the harness runs


EXPERIMENT = Experiment(
    name="selftest",
    cases=cases,
    make_inputs=make_inputs,
    reference=reference,
    flops=flops,
    bytes=bytes_moved,
    backends=[Backend(name, build=build, probe=_cpu, vendors=("cpu",)) for name, build in (
        ("matmul", build_matmul), ("einsum", build_einsum), ("wrong", build_wrong), ("crash", build_crash),
        ("hang", build_hang), ("oom", build_oom), ("raises", build_raises))],
    baseline="matmul",
    flops_dtype=lambda case: "fp32",
    # An artifact table per timed backend: the harness stores it beside the row.
    artifacts=lambda case, backend, inputs: {"checksums": [{"row": i, "sum": float(inputs["out"][i].sum())}
                                                          for i in range(2)]},
)
