"""FlashAttention backward: TileLang vs FlashAttention-2/3 and PyTorch SDPA (flash, cuDNN) (claim C7).

Layout BSHD, as experiments/flash_attention.py: q, o, do [b, s_q, h, d], k, v [b, s_k, h_kv, d];
head dims 64 and 128 (d_v = d); causal masks align bottom-right. Every backend receives the same
q, k, v and output gradient do; its `build` runs the forward (and keeps what its backward needs:
the autograd graph, or TileLang's o and LSE) outside the timed region, and the timed callable is
the backward alone, returning (dq, dk, dv) in BSHD. The gate compares all three gradients with
those of float32 autograd through math attention (TF32 off), per-dtype tolerances in
configs/experiment/flash_attention_bwd.yaml.

FLOPs = 2.5 x the forward's GEMM work: the forward has two GEMMs (QK^T, PV), 2 * b * h * 2d * A
flops over A visible (query, key) pairs (experiments/flash_attention.py's A: s_q * s_k, or the
visible area under the causal mask); the backward has five (QK^T recomputed, dP = dO V^T,
dV = P^T dO, dK = dS^T Q, dQ = dS K), so FLOPs = 2.5 * 4 * b * h * d * A = 10 * b * h * d * A.
This is the count the FlashAttention papers use for their backward TFLOPS.

Bytes = q, k, v, o, do read and dq, dk, dv written once (a lower bound; the LSE and delta rows
are left out): b * d * (4 * s_q * h + 4 * s_k * h_kv) * elem.

fa2 / fa3 need builds with their backward kernels: pip's flash-attn wheel, or `make baselines`'
fa2_bwd / fa3_bwd (head dims 64 and 128), which install the same modules as the forward-only fa2
/ fa3 and are put on the path instead of them with REPRO_BASELINES_USE=fa3_bwd,fa2_bwd. Their
probe (needs_backward) runs one tiny backward: a build without one gives `skipped` rows saying so.
"""
from __future__ import annotations

import functools
from typing import Optional

from experiments.flash_attention import visible_pairs
from repro.measure.experiment import Backend, Experiment, TORCH_DTYPES, needs_module, selected_dtypes

REF_CHUNK_ELEMS = 1 << 26  # fp32 score elements per reference chunk (the autograd graph holds a few)


def _case(batch, heads, heads_kv, seq_q, seq_k, head_dim, causal, dtype) -> dict:
    return {"batch": batch, "heads": heads, "heads_kv": heads_kv, "seq_q": seq_q, "seq_k": seq_k,
            "head_dim": head_dim, "causal": bool(causal), "dtype": dtype}


def cases(cfg) -> list[dict]:
    """tokens = batch * seqlen, hidden = heads * head dim (the FlashAttention papers' grid), GQA
    cases at the same token count, and explicit extra shapes (ragged lengths)."""
    out = []
    for dtype in selected_dtypes(cfg):
        for d in cfg.head_dims:
            for s in cfg.seqlens:
                for causal in cfg.causal:
                    out.append(_case(_div(cfg.tokens, s), _div(cfg.hidden, d), _div(cfg.hidden, d), s, s, d,
                                     causal, dtype))
        gqa = cfg.get("gqa")
        for heads, heads_kv in (gqa.heads if gqa else []):
            for s in gqa.seqlens:
                for causal in cfg.causal:
                    out.append(_case(_div(cfg.tokens, s), heads, heads_kv, s, s, gqa.head_dim, causal, dtype))
        for extra in cfg.get("extra_cases") or []:
            for causal in cfg.causal:
                out.append(_case(extra.batch, extra.heads, extra.get("heads_kv", extra.heads), extra.seq_q,
                                 extra.get("seq_k", extra.seq_q), extra.head_dim, causal, dtype))
    keys = [tuple(sorted(c.items())) for c in out]
    if len(set(keys)) != len(keys):
        raise ValueError("flash_attention_bwd: the config lists a case twice")
    return out


def _div(total: int, part: int) -> int:
    if part <= 0 or total % part:
        raise ValueError(f"flash_attention_bwd: {part} does not divide {total}")
    return total // part


def validate_case(case: dict) -> None:
    from kernels.flash_attention_bwd import validate

    if case["dtype"] not in ("fp16", "bf16"):
        raise ValueError(f"flash_attention_bwd: dtype {case['dtype']} unsupported; allowed: fp16, bf16")
    validate(case["batch"], case["heads"], case["heads_kv"], case["seq_q"], case["seq_k"], case["head_dim"],
             case["causal"], TORCH_DTYPES[case["dtype"]])


def make_inputs(case: dict, seed: int, device: str) -> dict:
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    dt = getattr(torch, TORCH_DTYPES[case["dtype"]])
    b, d = case["batch"], case["head_dim"]

    def rand(s, h):
        return torch.randn(b, s, h, d, device=device, generator=g).to(dt)

    return {"q": rand(case["seq_q"], case["heads"]), "k": rand(case["seq_k"], case["heads_kv"]),
            "v": rand(case["seq_k"], case["heads_kv"]), "do": rand(case["seq_q"], case["heads"])}


def reference(case: dict, inputs: dict):
    return attention_grads(inputs["q"], inputs["k"], inputs["v"], inputs["do"], case["causal"])


def attention_grads(q, k, v, do, causal: bool):
    """(dq, dk, dv) in float32 by autograd through math attention, chunked over batch, KV heads and
    query rows (the K/V gradients of a head's row chunks add up); TF32 off."""
    import torch

    b, s_q, h, d = q.shape
    s_k, h_kv = k.shape[1], k.shape[2]
    group = h // h_kv
    grads = [torch.zeros(t.shape, device=q.device, dtype=torch.float32) for t in (q, k, v)]
    rows = max(1, min(s_q, REF_CHUNK_ELEMS // max(1, group * s_k)))
    keys = torch.arange(s_k, device=q.device)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for bi in range(b):
            for hk in range(h_kv):
                heads = slice(hk * group, (hk + 1) * group)
                for r0 in range(0, s_q, rows):
                    qf = q[bi, r0:r0 + rows, heads].float().transpose(0, 1).requires_grad_()
                    kf = k[bi, :, hk].float().requires_grad_()
                    vf = v[bi, :, hk].float().requires_grad_()
                    scores = (qf @ kf.T) / d**0.5  # [group, rows, s_k]
                    if causal:
                        limit = torch.arange(r0, r0 + qf.shape[1], device=q.device) + (s_k - s_q)
                        scores = scores.masked_fill(keys[None, :] > limit[:, None], float("-inf"))
                    out = torch.softmax(scores, dim=-1) @ vf
                    dout = do[bi, r0:r0 + rows, heads].float().transpose(0, 1)
                    dq, dk, dv = torch.autograd.grad(out, (qf, kf, vf), dout)
                    grads[0][bi, r0:r0 + rows, heads] = dq.transpose(0, 1)
                    grads[1][bi, :, hk] += dk
                    grads[2][bi, :, hk] += dv
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return tuple(grads)


def flops(case: dict) -> float:
    return 2.5 * 4.0 * case["batch"] * case["heads"] * case["head_dim"] * visible_pairs(case)


def bytes_moved(case: dict) -> float:
    elem = 2.0  # fp16 / bf16
    rows = 4 * case["seq_q"] * case["heads"] + 4 * case["seq_k"] * case["heads_kv"]
    return case["batch"] * case["head_dim"] * rows * elem


def build_tilelang(case: dict, inputs: dict):
    """TileLang forward (with LSE) here; the timed callable is the TileLang backward."""
    from kernels import flash_attention_bwd as fab

    q, k, v, do, causal = inputs["q"], inputs["k"], inputs["v"], inputs["do"], case["causal"]
    o, lse = fab.forward(q, k, v, causal)
    return fab.prepare_backward(q, k, v, o, lse, do, causal)


def _autograd_backward(forward, inputs: dict, layout=lambda t: t):
    """Leaves q, k, v (in the layout `forward` takes), one forward; the timed callable is
    autograd's backward through the same graph (kept for the next call), grads back in BSHD."""
    import torch

    leaves = [layout(inputs[n]).detach().clone().requires_grad_() for n in ("q", "k", "v")]
    out = forward(*leaves)
    do = layout(inputs["do"])  # as a model hands it back: BSHD memory (a BHSD view for SDPA)

    def run():
        grads = torch.autograd.grad(out, leaves, do, retain_graph=True)
        return tuple(layout(g) for g in grads)

    return run


def _bhsd(t):
    return t.transpose(1, 2)


def _build_sdpa(case: dict, inputs: dict, backend):
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel
    from torch.nn.attention.bias import causal_lower_right

    kwargs = {}
    if case["causal"] and case["seq_q"] == case["seq_k"]:
        kwargs["is_causal"] = True
    elif case["causal"]:
        kwargs["attn_mask"] = causal_lower_right(case["seq_q"], case["seq_k"])
    group = case["heads"] // case["heads_kv"]

    def forward(q, k, v):
        with sdpa_kernel(backend):
            if group == 1:
                return F.scaled_dot_product_attention(q, k, v, **kwargs)
            try:
                return F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kwargs)
            except (RuntimeError, TypeError):  # no GQA path: repeat K/V inside the graph (its grads sum)
                return F.scaled_dot_product_attention(q, k.repeat_interleave(group, dim=1),
                                                      v.repeat_interleave(group, dim=1), **kwargs)

    return _autograd_backward(forward, inputs, _bhsd)


def build_sdpa_flash(case: dict, inputs: dict):
    from torch.nn.attention import SDPBackend

    return _build_sdpa(case, inputs, SDPBackend.FLASH_ATTENTION)


def build_cudnn(case: dict, inputs: dict):
    from torch.nn.attention import SDPBackend

    return _build_sdpa(case, inputs, SDPBackend.CUDNN_ATTENTION)


# The `make baselines` builds of each module that keep the backward kernels (configs/baselines.yaml:
# head dims 64 and 128); its fa2 and fa3 builds compile them out.
BACKWARD_BUILDS = {"flash_attn": "fa2_bwd", "flash_attn_interface": "fa3_bwd"}


def needs_backward(module: str):
    """Probe factory for FlashAttention packages: a CUDA device, `module` imports, and its build
    has the backward kernels. Builds without them (FLASHATTENTION_DISABLE_BACKWARD, as
    `make baselines`' fa2 and fa3) import and run the forward, then raise at the first backward:
    a `skipped` row naming the build to use instead, rather than an error row per case."""

    def probe() -> Optional[str]:
        return needs_module(module)() or _backward_missing(module)

    return probe


@functools.lru_cache(maxsize=None)
def _backward_missing(module: str) -> Optional[str]:
    """Once per process: one forward and backward of `module.flash_attn_func` at 1 x 128 x 1 x 64
    bf16. None when it runs (or fails otherwise: the rows then carry that error)."""
    import importlib

    try:
        _tiny_backward(importlib.import_module(module).flash_attn_func)
    except RuntimeError as exc:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "does not support backward" not in text and "backward disabled" not in text:
            return None
        build = BACKWARD_BUILDS.get(module)
        hint = (f"; `make baselines` builds {build}: run with REPRO_BASELINES_USE={build}" if build else "")
        return f"{module} was built without its backward kernels ({text}){hint}"
    return None


def _tiny_backward(flash_attn_func) -> None:
    import torch

    q, k, v = (torch.randn(1, 128, 1, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    out = flash_attn_func(q, k, v)
    out = out[0] if isinstance(out, tuple) else out
    torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    torch.cuda.synchronize()


def build_fa2(case: dict, inputs: dict):
    from flash_attn import flash_attn_func

    return _autograd_backward(lambda q, k, v: flash_attn_func(q, k, v, causal=case["causal"]), inputs)


def build_fa3(case: dict, inputs: dict):
    from flash_attn_interface import flash_attn_func

    def forward(q, k, v):
        out = flash_attn_func(q, k, v, causal=case["causal"])
        return out[0] if isinstance(out, tuple) else out  # some versions return (out, lse)

    return _autograd_backward(forward, inputs)


def build_torch(case: dict, inputs: dict):
    return lambda: reference(case, inputs)


EXPERIMENT = Experiment(
    name="flash_attention_bwd",
    cases=cases,
    make_inputs=make_inputs,
    reference=reference,
    flops=flops,
    bytes=bytes_moved,
    backends=[
        Backend("tilelang", build=build_tilelang, probe=needs_module("tilelang")),
        Backend("fa2", build=build_fa2, probe=needs_backward("flash_attn")),
        Backend("sdpa_flash", build=build_sdpa_flash, trusted=True),
        Backend("cudnn", build=build_cudnn, trusted=True),
        Backend("fa3", build=build_fa3, probe=needs_backward("flash_attn_interface")),
        Backend("torch", build=build_torch, timed=False, trusted=True),
    ],
    baseline="sdpa_flash",
    validate_case=validate_case,
)
