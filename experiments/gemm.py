"""GEMM: TileLang vs cuBLAS (torch.matmul) vs a Triton GEMM, C[M,N] = A[M,K] @ B[K,N].

FLOPs = 2*M*N*K. Bytes = (M*K + K*N + M*N) * element size (each operand read once, C written once).
The reference is the same product in float64.
"""
from __future__ import annotations

from dataclasses import asdict

from experiments.vendor import GEMM_BACKENDS
from repro.measure.experiment import Backend, Experiment, needs_module, selected_dtypes, torch_dtype
from repro.measure.tuning import KnobCache, compile_all, pick_fastest



def cases(cfg) -> list[dict]:

    out, seen = [], set()
    for shape in cfg.shapes:
        if len(shape) != 3 or any(isinstance(x, bool) or not isinstance(x, int) or x <= 0 for x in shape):
            raise ValueError(f"shapes: {list(shape)} is not [M, N, K] with positive integers")
        if tuple(shape) in seen:
            raise ValueError(f"shapes: {list(shape)} is listed twice")
        seen.add(tuple(shape))
        for dtype in selected_dtypes(cfg):
            out.append({"M": shape[0], "N": shape[1], "K": shape[2], "dtype": dtype})
    return out


def make_inputs(case: dict, seed: int, device: str) -> dict:
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    dt = torch_dtype(case["dtype"])
    a = torch.randn(case["M"], case["K"], device=device, generator=g).to(dt)
    b = torch.randn(case["K"], case["N"], device=device, generator=g).to(dt)
    return {"a": a, "b": b, "out": torch.empty(case["M"], case["N"], device=device, dtype=dt)}


def reference(case: dict, inputs: dict):
    return inputs["a"].double() @ inputs["b"].double()


def flops(case: dict) -> float:
    return 2.0 * case["M"] * case["N"] * case["K"]


def bytes_moved(case: dict) -> float:
    return 2.0 * (case["M"] * case["K"] + case["K"] * case["N"] + case["M"] * case["N"])


def _knob_key(case: dict) -> str:
    import torch

    return f"{case['M']},{case['N']},{case['K']},{case['dtype']},{torch.cuda.get_device_name()}"


def tuned_knobs(case: dict):
    """The searched schedule when one was cached by `prepare`, else the heuristic."""
    from kernels.gemm import GemmKnobs, heuristic_knobs

    found = KnobCache("gemm").get(_knob_key(case))
    return GemmKnobs(**found) if found else heuristic_knobs(case["M"], case["N"], case["K"])


def prepare(cases_: list[dict], backends: list[str]) -> None:
    """Search TileLang schedules for every case before the sweep (compiles in parallel)."""
    if "tilelang" in backends:
        search_schedules(cases_)


def search_schedules(cases_: list[dict]) -> None:
    import torch

    from kernels.gemm import CANDIDATES, compile_gemm

    cache = KnobCache("gemm")
    todo = [c for c in cases_ if cache.get(_knob_key(c)) is None]
    jobs = [(c, k) for c in todo for k in CANDIDATES]
    kernels = compile_all([lambda c=c, k=k: compile_gemm(c["M"], c["N"], c["K"], c["dtype"], k) for c, k in jobs])
    for i, case in enumerate(todo):
        inputs = make_inputs(case, 0, "cuda")
        chunk = kernels[i * len(CANDIDATES):(i + 1) * len(CANDIDATES)]
        runners = [k if isinstance(k, Exception) else (lambda k=k: k(inputs["a"], inputs["b"], inputs["out"]))
                   for k in chunk]
        cache.put(_knob_key(case), asdict(pick_fastest(CANDIDATES, runners)))
        del inputs
        torch.cuda.empty_cache()


def build_tilelang(case: dict, inputs: dict):
    from kernels.gemm import compile_gemm

    kernel = compile_gemm(case["M"], case["N"], case["K"], case["dtype"], tuned_knobs(case))
    a, b, out = inputs["a"], inputs["b"], inputs["out"]

    def run():
        kernel(a, b, out)
        return out

    return run


def build_cublas(case: dict, inputs: dict):
    import torch

    a, b, out = inputs["a"], inputs["b"], inputs["out"]
    return lambda: torch.matmul(a, b, out=out)


def build_triton(case: dict, inputs: dict):
    from kernels.triton.gemm import gemm

    a, b, out = inputs["a"], inputs["b"], inputs["out"]
    return lambda: gemm(a, b, out)


EXPERIMENT = Experiment(
    name="gemm",
    cases=cases,
    make_inputs=make_inputs,
    reference=reference,
    flops=flops,
    bytes=bytes_moved,
    backends=[
        Backend("tilelang", build=build_tilelang, probe=needs_module("tilelang"), vendors=("nvidia", "amd")),
        Backend("cublas", build=build_cublas, trusted=True),
        Backend("hipblaslt", build=build_cublas, vendors=("amd",), trusted=True),
        Backend("triton", build=build_triton, probe=needs_module("triton"), vendors=("nvidia", "amd")),
        *GEMM_BACKENDS,  # Ascend, detected at run time
    ],
    baseline="cublas",
    prepare=prepare,
)
