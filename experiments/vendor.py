"""AMD and Ascend backends, each detected at run time (claims C2, C5, C6).

Not an experiment: lists of Backends that experiments/flash_attention.py and experiments/gemm.py
add to their own. Each Backend names its vendor, so the harness skips it elsewhere; its probe
says why it cannot run here (no ROCm torch, library not installed, no NPU), never raises.
The builders take the experiments' inputs as they are (BSHD q/k/v and `out` for attention,
a/b/out for GEMM), so the gate checks them against the same reference.
"""
from __future__ import annotations

from typing import Callable, Optional

from repro.measure.experiment import Backend, first_missing, needs_cuda

ASCEND_MASK_SIZE = 2048  # torch_npu's compressed causal mask is a fixed 2048 x 2048 triangle


def on_rocm(*modules: str) -> Callable[[], Optional[str]]:
    """Probe: a ROCm build of torch with a visible GPU, and every module importable."""

    def probe() -> Optional[str]:
        reason = needs_cuda()
        if reason:
            return reason
        import torch

        if not getattr(torch.version, "hip", None):
            return "torch is not a ROCm build (torch.version.hip is unset)"
        return first_missing(modules)

    return probe


def on_npu(*modules: str) -> Callable[[], Optional[str]]:
    """Probe: torch_npu importable with an NPU visible, and every module importable."""

    def probe() -> Optional[str]:
        reason = first_missing(("torch_npu",))
        if reason:
            return reason
        import torch

        if not torch.npu.is_available():
            return "torch_npu is installed but no NPU is visible"
        return first_missing(modules)

    return probe


def tilelang_ascend_probe() -> Optional[str]:
    """tilelang-ascend replaces the `tilelang` package; the suite has no kernel written for it yet."""
    from importlib import metadata

    reason = on_npu()()
    if reason:
        return reason
    try:
        version = metadata.version("tilelang-ascend")
    except metadata.PackageNotFoundError:
        return "tilelang-ascend not installed (pip install tilelang-ascend, aarch64 CPython 3.11)"
    return f"tilelang-ascend {version} found, but no kernel of this suite is written for it (docs/portability.md)"


# --- attention (experiments/flash_attention.py inputs: q [b, s_q, h, d], k/v [b, s_k, h_kv, d]) ---

def build_fa2_rocm(case: dict, inputs: dict):
    """flash_attn's ROCm build (Composable Kernel, or Triton with FLASH_ATTENTION_TRITON_AMD_ENABLE)."""
    from flash_attn import flash_attn_func

    q, k, v, causal = inputs["q"], inputs["k"], inputs["v"], case["causal"]
    return lambda: flash_attn_func(q, k, v, causal=causal)


def build_aiter(case: dict, inputs: dict):
    """AMD aiter's flash attention forward (same BSHD layout and bottom-right causal as flash_attn)."""
    import aiter

    q, k, v, causal = inputs["q"], inputs["k"], inputs["v"], case["causal"]

    def run():
        out = aiter.flash_attn_func(q, k, v, causal=causal)
        return out[0] if isinstance(out, tuple) else out  # some releases return (out, lse)

    return run


def build_npu_fusion_attention(case: dict, inputs: dict):
    """Ascend's FlashAttentionScore operator (the C2 baseline) on BSND tensors.

    Causal uses sparse_mode 3 ("rightDownCausal"), i.e. the bottom-right alignment of the
    reference, with the fixed 2048 x 2048 mask the operator requires for that mode. GQA runs
    natively (head_num is the query head count; K/V carry fewer heads).
    """
    import torch
    import torch_npu

    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    kwargs = {"scale": case["head_dim"] ** -0.5, "keep_prob": 1.0}
    if case["causal"]:
        ones = torch.ones(ASCEND_MASK_SIZE, ASCEND_MASK_SIZE, dtype=torch.bool, device=q.device)
        kwargs.update(atten_mask=torch.triu(ones, diagonal=1), sparse_mode=3)
    return lambda: torch_npu.npu_fusion_attention(q, k, v, case["heads"], "BSND", **kwargs)[0]


def build_npu_infer_attention(case: dict, inputs: dict):
    """Ascend's FusedInferAttentionScore (the inference operator), BSND, same masking rules."""
    import torch
    import torch_npu

    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    kwargs = {"num_heads": case["heads"], "num_key_value_heads": case["heads_kv"], "input_layout": "BSND",
              "scale": case["head_dim"] ** -0.5}
    if case["causal"]:
        ones = torch.ones(ASCEND_MASK_SIZE, ASCEND_MASK_SIZE, dtype=torch.bool, device=q.device)
        kwargs.update(atten_mask=torch.triu(ones, diagonal=1), sparse_mode=3)
    return lambda: torch_npu.npu_fused_infer_attention_score(q, k, v, **kwargs)[0]


def build_unavailable(case: dict, inputs: dict):
    raise NotImplementedError("no TileLang-Ascend kernel in this suite yet (docs/portability.md, claim C2)")


# --- GEMM (experiments/gemm.py inputs: a [M, K], b [K, N], out [M, N]) ---

def build_npu_matmul(case: dict, inputs: dict):
    """torch.matmul on the NPU: CANN's MatMul operator (aclnn)."""
    import torch

    a, b, out = inputs["a"], inputs["b"], inputs["out"]
    return lambda: torch.matmul(a, b, out=out)


FLASH_ATTENTION_BACKENDS = [
    Backend("fa2_rocm", build=build_fa2_rocm, probe=on_rocm("flash_attn"), vendors=("amd",)),
    Backend("aiter", build=build_aiter, probe=on_rocm("aiter"), vendors=("amd",)),
    Backend("torch_npu", build=build_npu_fusion_attention, probe=on_npu(), vendors=("ascend",)),
    Backend("torch_npu_infer", build=build_npu_infer_attention, probe=on_npu(), vendors=("ascend",)),
    Backend("tilelang_ascend", build=build_unavailable, probe=tilelang_ascend_probe, vendors=("ascend",)),
]

# hipBLASLt (torch.matmul on ROCm) and TileLang's HIP target are already gemm.py's `hipblaslt`
# and `tilelang` backends; what Ascend adds:
GEMM_BACKENDS = [
    Backend("torch_npu", build=build_npu_matmul, probe=on_npu(), vendors=("ascend",)),
]
