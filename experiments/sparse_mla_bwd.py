"""DeepSeek-V3.2 sparse MLA backward: TileLang vs PyTorch autograd (claim C7, V3.2's training path).

The forward's cases and inputs (experiments/sparse_mla.py: q bf16 [t, heads, 576], kv bf16
[s, 1, 576], indices int32 [t, 1, topk]) plus an output gradient d_out bf16 [t, heads, 512]. Each
backend runs the forward in its build (outside the timed region) and keeps what its backward
needs (TileLang: out and lse; PyTorch: the autograd graph); the timed callable is the backward alone and returns (dq [t, heads, 576], dkv [s, 1, 576]).
The gate compares both with float32 autograd through the forward's reference (chunked over
queries, TF32 off); dkv sums the contributions of every query that selected a row.

FLOPs = five GEMMs over the selected positions: scores recomputed (576), dP = d_out V^T (512),
dq = dS K (576), dK = dS^T q (576), dV = P^T d_out (512): 2 * t * heads * topk * 2752.
Bytes = q, d_out, out and dq once, the gathered kv rows once (bf16) and dkv's rows read and
written once in fp32 (a lower bound: atomics may touch a row once per query that selected it).
"""
from __future__ import annotations

from experiments import _dsa, upstream
from experiments import sparse_mla as fwd
from repro.measure.experiment import Backend, Experiment, needs_module

BWD_DQK = 576 + 512 + 576 + 576 + 512  # the inner dims of the five GEMMs


def validate_case(case: dict) -> None:
    from kernels.sparse_mla_bwd import knobs

    fwd.validate_case(case)
    knobs(case["heads"])  # the backward's own rule (a multiple of 16)


def make_inputs(case: dict, seed: int, device: str) -> dict:
    import torch

    inputs = fwd.make_inputs(case, seed, device)
    g = _dsa.generator(seed + 7, device)
    inputs["d_out"] = torch.randn(case["t"], case["heads"], case["d_v"], generator=g, device=device).to(torch.bfloat16)
    return inputs


def _attend(q, kv, idx, scale: float, d_v: int, dtype):
    """The forward of experiments/sparse_mla.py written for autograd (no in-place op; that one
    stays in place, as it is also the timed PyTorch forward baseline): a masked
    score is a large negative number, not -inf, and the probabilities are multiplied by the mask,
    so a query with no valid index has out = 0 and every gradient stays finite."""
    import torch

    valid = (idx >= 0)[:, None, :]
    rows = kv[idx.clamp_min(0), 0].to(dtype)  # [c, topk, d_qk]; backward: rows' gradients scatter-added
    wide = torch.promote_types(dtype, torch.float32)  # scores and softmax in fp32 (fp64 stays fp64)
    scores = (torch.bmm(q.to(dtype), rows.transpose(1, 2)).to(wide) * scale).masked_fill(~valid, -1e30)
    probs = torch.exp(scores - torch.logsumexp(scores, dim=-1, keepdim=True)) * valid
    return torch.bmm(probs.to(dtype), rows[..., :d_v])


def _forward_graph(case: dict, inputs: dict, dtype):
    """The forward's gather / bmm / softmax / bmm in `dtype` with autograd, chunked over queries:
    ([(query rows, q leaf, out)], kv leaf)."""
    q, kv, idx = inputs["q"], inputs["kv"], inputs["indices"][:, 0]
    t = q.shape[0]
    kv_leaf = kv.to(dtype).requires_grad_()
    step = _dsa.query_chunk(t, 3 * case["topk"] * case["d_qk"], elem_bytes=dtype.itemsize, budget_bytes=2**31)
    chunks = []
    for r0 in range(0, t, step):
        rows = slice(r0, min(r0 + step, t))
        q_leaf = q[rows].to(dtype).requires_grad_()
        chunks.append((rows, q_leaf, _attend(q_leaf, kv_leaf, idx[rows], fwd.sm_scale(case), case["d_v"], dtype)))
    return chunks, kv_leaf


def _backward(chunks, kv_leaf, d_out, retain: bool):
    """(dq, dkv) of the chunks' graph for the output gradient d_out."""
    import torch

    grads = torch.autograd.grad([out for _, _, out in chunks], [q for _, q, _ in chunks] + [kv_leaf],
                                [d_out[rows].to(out.dtype) for rows, _, out in chunks], retain_graph=retain)
    return torch.cat(grads[:-1]), grads[-1]


def reference(case: dict, inputs: dict):
    import torch

    with _dsa.exact_fp32():
        return _backward(*_forward_graph(case, inputs, torch.float32), inputs["d_out"], retain=False)


def flops(case: dict) -> float:
    return 2.0 * case["t"] * case["heads"] * case["topk"] * BWD_DQK


def bytes_moved(case: dict) -> float:
    t, h = case["t"], case["heads"]
    kv_rows = min(case.get("batch", 1) * case["s"], t * case["topk"])
    bf16_elems = t * h * (case["d_qk"] + 2 * case["d_v"]) + t * h * case["d_qk"] + kv_rows * case["d_qk"]
    return 2.0 * bf16_elems + 8.0 * kv_rows * case["d_qk"] + 4.0 * (t * case["topk"] + t * h)


def build_tilelang(case: dict, inputs: dict):
    from kernels.sparse_mla import sparse_mla
    from kernels.sparse_mla_bwd import sparse_mla_backward

    q, kv, idx, d_out = inputs["q"], inputs["kv"], inputs["indices"], inputs["d_out"]
    scale = fwd.sm_scale(case)
    out, lse = sparse_mla(q, kv, idx, scale, case["d_v"])
    sparse_mla_backward(q, kv, idx, out, lse, d_out, scale)  # compile outside the timed callable
    return lambda: sparse_mla_backward(q, kv, idx, out, lse, d_out, scale)


def upstream_supports(case: dict):
    """The cases TileLang's published sparse MLA backward (examples/deepseek_v32/sparse_mla_bwd.py)
    implements: d_qk 576 / d_v 512, top-k in blocks of 32, 16 heads or a larger power of two (it
    pads heads to one), one sequence whose query i sits at position i (no offset: t == s, the
    training shape). None, or why not."""
    if (case["d_qk"], case["d_v"]) != (576, 512):
        return "the example is written for d_qk 576 and d_v 512"
    if case["topk"] % 32:
        return f"the example takes top-k in blocks of 32, not {case['topk']}"
    if case["heads"] < 16 or case["heads"] & (case["heads"] - 1):
        return f"the example pads heads to a power of two (>= 16); {case['heads']} would read past q"
    if case.get("batch", 1) != 1 or case["t"] != case["s"]:
        return (f"the example places query i at position i of one sequence (t == s); here t={case['t']}, "
                f"s={case['s']}, batch={case.get('batch', 1)}")
    return None


def build_tilelang_upstream(case: dict, inputs: dict):
    """TileLang's published sparse MLA backward (delta, dq / dkv with fp32 atomics, dkv to bf16),
    fed this suite's forward output and its LSE in the example's log2 units, with a leading batch
    dim, and the indices' -1 padding turned into s (past every query's position, which the example
    masks); all outside the timed call."""
    import math

    import torch

    from kernels.sparse_mla import sparse_mla

    q, kv, idx, d_out = inputs["q"], inputs["kv"], inputs["indices"], inputs["d_out"]
    scale = fwd.sm_scale(case)
    out, lse = sparse_mla(q, kv, idx, scale, case["d_v"])
    padded = torch.where(idx >= 0, idx, torch.full_like(idx, case["s"]))[None].contiguous()
    lse2 = (lse * math.log2(math.e))[None].contiguous()
    bwd = upstream.example(upstream.SPARSE_MLA_BWD).sparse_mla_bwd
    args = (q[None], kv[None], out[None].contiguous(), d_out[None], padded, lse2, scale)

    def run():
        dq, dkv = bwd(*args)
        return dq[0], dkv[0]

    return run


def build_torch(case: dict, inputs: dict):
    """Plain PyTorch: autograd of the bf16 gather / bmm / softmax / bmm; the forward's graph is
    built here, the timed callable is its backward (the graph kept for the next call)."""
    import torch

    chunks, kv_leaf = _forward_graph(case, inputs, torch.bfloat16)
    return lambda: _backward(chunks, kv_leaf, inputs["d_out"], retain=True)


EXPERIMENT = Experiment(
    name="sparse_mla_bwd",
    cases=fwd.cases,
    make_inputs=make_inputs,
    reference=reference,
    flops=flops,
    bytes=bytes_moved,
    backends=[
        Backend("tilelang", build=build_tilelang, probe=needs_module("tilelang")),
        Backend("torch", build=build_torch, trusted=True),
        Backend(upstream.NAME, build=build_tilelang_upstream, probe=upstream.upstream_probe(upstream.SPARSE_MLA_BWD),
                dtypes=("bf16",), supports=upstream_supports),
    ],
    baseline="torch",
    validate_case=validate_case,
    flops_dtype=lambda case: "bf16",
    sources=("experiments/_dsa.py", "experiments/sparse_mla.py"),
)
