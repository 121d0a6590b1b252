"""Device memory bandwidth: a large device-to-device copy, the ceiling memory-bound kernels are
judged against ("the bandwidth the suite measures for the card").

Bytes = 2 * size (each byte read once and written once); FLOPs = 0. The reference is the input.
"""
from __future__ import annotations

from repro.measure.experiment import Backend, Experiment

MIB = 1 << 20


def cases(cfg) -> list[dict]:
    sizes = list(cfg.sizes_mib)
    if any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in sizes):
        raise ValueError(f"sizes_mib: {sizes} must be positive integers (MiB)")
    return [{"size_mib": s, "dtype": "fp32"} for s in sizes]


def make_inputs(case: dict, seed: int, device: str) -> dict:
    import torch

    n = case["size_mib"] * MIB // 4
    x = torch.randn(n, device=device, generator=torch.Generator(device=device).manual_seed(seed))
    return {"x": x, "out": torch.empty_like(x)}


def reference(case: dict, inputs: dict):
    return inputs["x"]


def flops(case: dict) -> float:
    return 0.0


def bytes_moved(case: dict) -> float:
    return 2.0 * case["size_mib"] * MIB


def build_copy(case: dict, inputs: dict):
    x, out = inputs["x"], inputs["out"]
    return lambda: out.copy_(x)


EXPERIMENT = Experiment(
    name="membw",
    cases=cases,
    make_inputs=make_inputs,
    reference=reference,
    flops=flops,
    bytes=bytes_moved,
    backends=[Backend("copy", build=build_copy, vendors=("nvidia", "amd"))],
    baseline="copy",
)
