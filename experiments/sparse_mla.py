"""DeepSeek-V3.2 sparse MLA forward (prefill): TileLang vs plain PyTorch (and FlashMLA).

q bf16 [t, 128, 576], one latent kv head kv bf16 [s, 1, 576] (V = its first 512 dims), each query
attending to its 2048 selected positions (indices int32 [t, 1, 2048], -1 = none); returns
out bf16 [t, 128, 512] and the natural-log lse fp32 [t, 128].

FLOPs (bf16) = 2 * t * heads * topk * (576 + 512), the count FlashMLA and TileLang publish
(every query of the default sweep has >= 2048 visible positions, so no slot is padding).
Bytes = q + kv (each read once) + indices + out + lse: the minimum, as the gathered rows may
come from L2. The gate's reference is fp32 from the bf16 inputs; the timed `torch` backend
gathers the selected rows and runs bmm / softmax / bmm in bf16, chunked over queries.
"""
from __future__ import annotations

import math

from experiments import _dsa
from repro.measure.experiment import Backend, Experiment, needs_module


def cases(cfg) -> list[dict]:
    return _dsa.grid_cases(cfg, heads=_dsa.MLA_HEADS, d_qk=_dsa.MLA_DQK, d_v=_dsa.MLA_DV,
                           topk=int(cfg.get("topk", _dsa.TOPK)), dtype="bf16")


def validate_case(case: dict) -> None:
    _dsa.check_causal(case)


def sm_scale(case: dict) -> float:
    return 1.0 / math.sqrt(case["d_qk"])


def make_inputs(case: dict, seed: int, device: str) -> dict:
    import torch

    g = _dsa.generator(seed, device)
    t, s, h, d = case["t"], case["s"], case["heads"], case["d_qk"]
    q = torch.randn(t, h, d, generator=g, device=device).to(torch.bfloat16)
    kv = torch.randn(s, 1, d, generator=g, device=device).to(torch.bfloat16)
    indices = _dsa.random_topk_indices(t, s, case["topk"], g, device)[:, None, :]
    return {"q": q, "kv": kv, "indices": indices.contiguous(),
            "out": torch.empty(t, h, case["d_v"], device=device, dtype=torch.bfloat16),
            "out_lse": torch.empty(t, h, device=device, dtype=torch.float32)}


def _attend(q, kv, idx, scale: float, d_v: int, dtype):
    """One chunk: gather the selected rows, scores, softmax, weighted sum. Returns (out, lse)."""
    import torch

    valid = idx >= 0
    rows = kv[idx.clamp_min(0), 0].to(dtype)  # [c, topk, d_qk]
    scores = torch.bmm(q.to(dtype), rows.transpose(1, 2)).float() * scale  # [c, heads, topk]
    scores.masked_fill_(~valid[:, None, :], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - lse[..., None]).nan_to_num_(0.0)  # a row with no index: all zero
    out = torch.bmm(probs.to(dtype), rows[..., :d_v])
    return out, lse


def _chunked(case: dict, inputs: dict, dtype, out, lse) -> None:
    q, kv, idx = inputs["q"], inputs["kv"], inputs["indices"][:, 0]
    t = q.shape[0]
    step = _dsa.query_chunk(t, case["topk"] * case["d_qk"], elem_bytes=dtype.itemsize, budget_bytes=2**30)
    for r0 in range(0, t, step):
        rows = slice(r0, min(r0 + step, t))
        o, l_ = _attend(q[rows], kv, idx[rows], sm_scale(case), case["d_v"], dtype)
        out[rows] = o
        lse[rows] = l_


def reference(case: dict, inputs: dict):
    import torch

    t, h = case["t"], case["heads"]
    out = torch.empty(t, h, case["d_v"], device=inputs["q"].device, dtype=torch.float32)
    lse = torch.empty(t, h, device=inputs["q"].device, dtype=torch.float32)
    with _dsa.exact_fp32():
        _chunked(case, inputs, torch.float32, out, lse)
    return out, lse


def flops(case: dict) -> float:
    return 2.0 * case["t"] * case["heads"] * case["topk"] * (case["d_qk"] + case["d_v"])


def bytes_moved(case: dict) -> float:
    t, s, h = case["t"], case["s"], case["heads"]
    return 2.0 * (t * h * case["d_qk"] + s * case["d_qk"] + t * h * case["d_v"]) + 4.0 * (t * case["topk"] + t * h)


def build_tilelang(case: dict, inputs: dict):
    from kernels.sparse_mla import sparse_mla

    q, kv, idx, out, lse = (inputs[k] for k in ("q", "kv", "indices", "out", "out_lse"))
    scale = sm_scale(case)
    sparse_mla(q, kv, idx, scale, case["d_v"], out=out, lse=lse)  # compile outside the timed callable
    return lambda: sparse_mla(q, kv, idx, scale, case["d_v"], out=out, lse=lse)


def build_torch(case: dict, inputs: dict):
    import torch

    out, lse = inputs["out"], inputs["out_lse"]

    def run():
        _chunked(case, inputs, torch.bfloat16, out, lse)
        return out, lse

    return run


def build_flash_mla(case: dict, inputs: dict):
    from flash_mla import flash_mla_sparse_fwd

    q, kv, idx = inputs["q"], inputs["kv"], inputs["indices"]
    scale, d_v = sm_scale(case), case["d_v"]

    def run():
        out, _max_logits, lse = flash_mla_sparse_fwd(q, kv, idx, scale, d_v)
        return out, lse  # natural-log lse, as FlashMLA's tests/ref.py defines it

    return run


EXPERIMENT = Experiment(
    name="sparse_mla",
    cases=cases,
    make_inputs=make_inputs,
    reference=reference,
    flops=flops,
    bytes=bytes_moved,
    backends=[
        Backend("tilelang", build=build_tilelang, probe=needs_module("tilelang")),
        Backend("torch", build=build_torch, trusted=True),
        Backend("flash_mla", build=build_flash_mla, probe=needs_module("flash_mla")),
    ],
    baseline="torch",
    validate_case=validate_case,
    flops_dtype=lambda case: "bf16",
    sources=("experiments/_dsa.py",),
)
