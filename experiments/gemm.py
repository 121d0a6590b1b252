"""GEMM: TileLang vs cuBLAS vs a Triton GEMM, C[M,N] = A[M,K] @ B[K,N].

fp16/bf16: B is [K, N], cuBLAS is torch.matmul, the reference the product in float64.
fp8 (e4m3, per-tensor scales) and fp8_block (DeepSeek-V3's 1x128 scales of A, 128x128 of B): B
is a weight [N, K] (K-major, as fp8 tensor cores and cuBLASLt want), C = (A @ B^T) * scales in
bf16; `cublas` is then torch._scaled_mm (cuBLASLt), `deepgemm` DeepGEMM's fp8 GEMM where installed (per-tensor scales passed as constant
per-block ones), and the reference is the float64 product of the dequantized inputs. fp8 cases
need N and K multiples of 16 (cuBLASLt's rule; fp8_block: K of 128), other shapes are fp16/bf16 only.

FLOPs = 2*M*N*K. Bytes = (M*K + K*N) * input element size + M*N * output element size.
"""
from __future__ import annotations

from experiments.vendor import GEMM_BACKENDS
from repro.measure.experiment import Backend, Experiment, needs_module, selected_dtypes, torch_dtype
from repro.measure.tuning import KnobCache, search

FP8 = ("fp8", "fp8_block")


def fp8_fits(M: int, N: int, K: int, dtype: str) -> bool:
    return N % 16 == 0 and K % (128 if dtype == "fp8_block" else 16) == 0


def cases(cfg) -> list[dict]:

    out, seen = [], set()
    for shape in cfg.shapes:
        if len(shape) != 3 or any(isinstance(x, bool) or not isinstance(x, int) or x <= 0 for x in shape):
            raise ValueError(f"shapes: {list(shape)} is not [M, N, K] with positive integers")
        if tuple(shape) in seen:
            raise ValueError(f"shapes: {list(shape)} is listed twice")
        seen.add(tuple(shape))
        for dtype in selected_dtypes(cfg):
            if dtype in FP8 and not fp8_fits(*shape, dtype):
                continue
            out.append({"M": shape[0], "N": shape[1], "K": shape[2], "dtype": dtype})
    return out


def _quantize(x, block: tuple | None):
    """x (fp32) -> (e4m3 values, fp32 scales): one scale (amax -> 448) per tensor, or per
    block of `block` = (rows, cols) elements, edge blocks included."""
    import torch

    if block is None:
        scale = (x.abs().amax() / 448.0).clamp_min(1e-12).reshape(1)
        return (x / scale).to(torch.float8_e4m3fn), scale
    (r, c), (R, C) = block, x.shape
    pad = torch.zeros(-(-R // r) * r, -(-C // c) * c, device=x.device)
    pad[:R, :C] = x
    blocks = pad.view(pad.shape[0] // r, r, pad.shape[1] // c, c)
    scale = (blocks.abs().amax(dim=(1, 3)) / 448.0).clamp_min(1e-12)
    q = (blocks / scale[:, None, :, None]).view_as(pad)[:R, :C]
    return q.to(torch.float8_e4m3fn).contiguous(), scale.contiguous()


def _dequantize(q, scale, block: tuple | None):
    x = q.double()
    if block is None:
        return x * scale.double()
    full = scale.double().repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)
    return x * full[:x.shape[0], :x.shape[1]]


def _blocks(case: dict):
    """(A's scale block, B's scale block), None for per-tensor."""
    return ((1, 128), (128, 128)) if case["dtype"] == "fp8_block" else (None, None)


def make_inputs(case: dict, seed: int, device: str) -> dict:
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    M, N, K = case["M"], case["N"], case["K"]
    if case["dtype"] in FP8:
        block_a, block_b = _blocks(case)
        a, sa = _quantize(torch.randn(M, K, device=device, generator=g), block_a)
        b, sb = _quantize(torch.randn(N, K, device=device, generator=g), block_b)
        return {"a": a, "b": b, "scale_a": sa, "scale_b": sb,
                "out": torch.empty(M, N, device=device, dtype=torch.bfloat16)}
    dt = torch_dtype(case["dtype"])
    a = torch.randn(M, K, device=device, generator=g).to(dt)
    b = torch.randn(K, N, device=device, generator=g).to(dt)
    return {"a": a, "b": b, "out": torch.empty(M, N, device=device, dtype=dt)}


def reference(case: dict, inputs: dict):
    if case["dtype"] in FP8:
        block_a, block_b = _blocks(case)
        a = _dequantize(inputs["a"], inputs["scale_a"], block_a)
        b = _dequantize(inputs["b"], inputs["scale_b"], block_b)
        return a @ b.t()
    return inputs["a"].double() @ inputs["b"].double()


def flops(case: dict) -> float:
    return 2.0 * case["M"] * case["N"] * case["K"]


def bytes_moved(case: dict) -> float:
    size = 1.0 if case["dtype"] in FP8 else 2.0
    return size * (case["M"] * case["K"] + case["K"] * case["N"]) + 2.0 * case["M"] * case["N"]


def flops_dtype(case: dict) -> str:
    return "fp8" if case["dtype"] in FP8 else case["dtype"]


def _knob_key(case: dict) -> str:
    import torch

    return f"{case['M']},{case['N']},{case['K']},{case['dtype']},{torch.cuda.get_device_name()}"


KERNEL_FILES = ("kernels/gemm*.py", "kernels/gemv.py")  # a searched schedule is kept per their version
CACHE = "gemm-v2"  # v2: the candidate lists per shape class (split-K, swapped, GEMV, fp8)


def tuned_knobs(case: dict):
    """The searched schedule when one was cached by `prepare`, else the first candidate."""
    found = KnobCache(CACHE, KERNEL_FILES).get(_knob_key(case))
    if case["dtype"] in FP8:
        from kernels.gemm_fp8 import Fp8Knobs, fp8_candidates

        return Fp8Knobs(**found) if found else fp8_candidates(case["M"], case["N"], case["K"], case["dtype"] == "fp8_block")[0]
    from kernels.gemm import GemmKnobs, default_knobs

    return GemmKnobs.from_dict(found) if found else default_knobs(case["M"], case["N"], case["K"])


def prepare(cases_: list[dict], backends: list[str]) -> None:
    """Search TileLang schedules for every case before the sweep (compiles in parallel)."""
    if "tilelang" in backends:
        search_schedules(cases_)


def _candidates(case: dict) -> list:
    M, N, K = case["M"], case["N"], case["K"]
    if case["dtype"] in FP8:
        from kernels.gemm_fp8 import fp8_candidates

        return fp8_candidates(M, N, K, case["dtype"] == "fp8_block")
    from kernels.gemm import candidates

    return candidates(M, N, K, case["dtype"])


def _compiler(case: dict, knobs):
    """A job compiling one candidate into a runner factory `inputs -> callable`."""
    if case["dtype"] in FP8:
        from kernels.gemm_fp8 import compile_gemm_fp8

        def job():
            kernel = compile_gemm_fp8(case["M"], case["N"], case["K"], knobs, case["dtype"] == "fp8_block")
            return lambda x: (lambda: kernel(x["a"], x["b"], x["scale_a"], x["scale_b"], x["out"]))
        return job
    from kernels.gemm import plan_gemm

    def job():
        plan = plan_gemm(case["M"], case["N"], case["K"], case["dtype"], knobs)
        return lambda x: (lambda: plan(x["a"], x["b"], x["out"]))
    return job


def search_schedules(cases_: list[dict]) -> None:
    """Per case: every candidate of its shape class, through the suite's one search."""
    search(KnobCache(CACHE, KERNEL_FILES), {_knob_key(c): c for c in cases_}, _candidates,
           compile_one=lambda case, knobs: _compiler(case, knobs)(),
           runner=lambda case, inputs, knobs, made: made(inputs),
           make_inputs=lambda case: make_inputs(case, 0, "cuda"), encode=lambda knobs: dict(vars(knobs)))


def build_tilelang(case: dict, inputs: dict):
    run = _compiler(case, tuned_knobs(case))()(inputs)
    out = inputs["out"]

    def timed():
        run()
        return out

    return timed


def _scaled_mm(case: dict, inputs: dict):
    import torch

    a, b, sa, sb, out = (inputs[k] for k in ("a", "b", "scale_a", "scale_b", "out"))
    if case["dtype"] == "fp8_block":  # blockwise scaling (recent PyTorch + cuBLASLt): outer-dim-major scales
        sa, sb = sa.t().contiguous().t(), sb.t()
        return lambda: torch._scaled_mm(a, b.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16, out=out)
    return lambda: torch._scaled_mm(a, b.t(), scale_a=sa.reshape(()), scale_b=sb.reshape(()),
                                    out_dtype=torch.bfloat16, out=out)


def build_cublas(case: dict, inputs: dict):
    import torch

    if case["dtype"] in FP8:
        return _scaled_mm(case, inputs)
    a, b, out = inputs["a"], inputs["b"], inputs["out"]
    return lambda: torch.matmul(a, b, out=out)


def build_triton(case: dict, inputs: dict):
    from kernels.triton.gemm import gemm

    a, b, out = inputs["a"], inputs["b"], inputs["out"]
    return lambda: gemm(a, b, out)


def build_deepgemm(case: dict, inputs: dict):
    """DeepGEMM's fp8 NT GEMM with 1x128 / 128x128 scales (per-tensor scales expanded to them);
    its scale layout (A's transposed, TMA-aligned) is prepared here, outside the timed call."""
    import deep_gemm

    M, N, K = case["M"], case["N"], case["K"]
    sa, sb = inputs["scale_a"], inputs["scale_b"]
    if case["dtype"] == "fp8":
        sa, sb = sa.expand(M, -(-K // 128)).float(), sb.expand(-(-N // 128), -(-K // 128)).float()
    align = getattr(deep_gemm, "get_col_major_tma_aligned_tensor", None) or \
        getattr(deep_gemm, "get_mn_major_tma_aligned_tensor")
    sa = align(sa.contiguous())
    a, b, out = inputs["a"], inputs["b"], inputs["out"]
    fn = getattr(deep_gemm, "fp8_gemm_nt", None) or getattr(deep_gemm, "gemm_fp8_fp8_bf16_nt")
    sb = sb.contiguous()
    return lambda: (fn((a, sa), (b, sb), out), out)[1]


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
        Backend("triton", build=build_triton, probe=needs_module("triton"), vendors=("nvidia", "amd"),
                dtypes=("fp16", "bf16")),
        Backend("deepgemm", build=build_deepgemm, probe=needs_module("deep_gemm"), dtypes=FP8),
        *GEMM_BACKENDS,  # Ascend, detected at run time
    ],
    baseline="cublas",
    flops_dtype=flops_dtype,
    prepare=prepare,
    sources=("kernels/gemv.py", "kernels/gemm_fp8.py"),
    schedule=lambda case: KnobCache(CACHE, KERNEL_FILES).describe(_knob_key(case)),
)
