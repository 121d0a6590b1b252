"""DeepSeek-V3.2 sparse MLA forward: TileLang vs plain PyTorch (and FlashMLA).

q bf16 [t, heads, 576] (V3.2 has 128 heads; 8/16/32 per GPU under tensor parallelism), one latent
kv head kv bf16 [s, 1, 576] (V = its first 512 dims), each query attending to its 2048 selected
positions (indices int32 [t, 1, 2048], -1 = none); returns out bf16 [t, heads, 512] and the
natural-log lse fp32 [t, heads]. Prefill cases are t queries at the end of one sequence of s
tokens; a decode case is `batch` sequences of s tokens each with `decode_tokens` new queries
(kv [batch * s, 1, 576], every query's indices inside its own sequence).

FLOPs (bf16) = 2 * t * heads * topk * (576 + 512), the count FlashMLA and TileLang publish
(every query of the default sweep has >= 2048 visible positions, so no slot is padding).
Bytes = q + kv rows (each read once: all of kv, or t * topk rows when fewer) + indices + out +
lse: the minimum, as the gathered rows may come from L2. The gate's reference is fp32 from the
bf16 inputs; the timed `torch` backend gathers the selected rows and runs bmm / softmax / bmm in
bf16, chunked over queries.
"""
from __future__ import annotations

import math

from experiments import _dsa, upstream
from repro.measure.experiment import Backend, Experiment, needs_module
from repro.measure.tuning import KnobCache, search

KERNEL_FILES = ("kernels/sparse_mla.py",)  # a searched schedule is kept per their version


def cases(cfg) -> list[dict]:
    """Every prefill [t, s] and decode [batch, s] pair of the config, for each head count."""
    fixed = {"d_qk": _dsa.MLA_DQK, "d_v": _dsa.MLA_DV, "topk": int(cfg.get("topk", _dsa.TOPK)), "dtype": "bf16"}
    grid = [*_dsa.grid_cases({"prefill": cfg.get("prefill")}), *_dsa.grid_cases({"decode": cfg.get("decode")})]
    tokens = int(cfg.get("decode_tokens", 1))
    for case in grid:
        if case["mode"] == "decode":  # [sequences, kv tokens per sequence]
            case.update(batch=case["t"], t=case["t"] * tokens)
    return [{**case, "heads": int(h), **fixed} for h in cfg.get("heads") or [_dsa.MLA_HEADS] for case in grid]


def validate_case(case: dict) -> None:
    batch = case.get("batch", 1)
    if case["t"] % batch:
        raise ValueError(f"t={case['t']} query tokens do not split evenly over batch={batch} sequences")
    _dsa.check_causal({**case, "t": case["t"] // batch})
    if case["heads"] <= 0 or case["heads"] % 8:  # the rule of kernels.sparse_mla.validate
        raise ValueError(f"heads={case['heads']} is not supported: sparse MLA takes a positive multiple of 8 "
                         f"(8, 16, 24, 32, 48, 64, 96, 128, ...) query heads")


def sm_scale(case: dict) -> float:
    return 1.0 / math.sqrt(case["d_qk"])


def make_inputs(case: dict, seed: int, device: str) -> dict:
    import torch

    g = _dsa.generator(seed, device)
    t, s, h, d, batch = case["t"], case["s"], case["heads"], case["d_qk"], case.get("batch", 1)
    q = torch.randn(t, h, d, generator=g, device=device).to(torch.bfloat16)
    kv = torch.randn(batch * s, 1, d, generator=g, device=device).to(torch.bfloat16)
    per_seq = [_dsa.random_topk_indices(t // batch, s, case["topk"], g, device) for _ in range(batch)]
    indices = torch.cat([torch.where(i >= 0, i + b * s, -1) for b, i in enumerate(per_seq)])[:, None, :]
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
    t, h = case["t"], case["heads"]
    kv_rows = min(case.get("batch", 1) * case["s"], t * case["topk"])
    bf16_elems = t * h * case["d_qk"] + kv_rows * case["d_qk"] + t * h * case["d_v"]
    return 2.0 * bf16_elems + 4.0 * (t * case["topk"] + t * h)


def _choice_key(case: dict) -> str:
    """The search's cache key: schedule family, head count, GPU."""
    import torch

    from kernels.sparse_mla import schedule_family

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    return f"{schedule_family(case['heads'], case['t'], sms)},{case['heads']},{torch.cuda.get_device_name()}"


def prepare(cases_: list[dict], backends: list[str]) -> None:
    """Pick each schedule family's candidate once per head count and GPU, on the case with the
    most queries among those that use it (the candidates differ in tiles, stages and threads; the
    top-k split, which depends on the query count, is computed per case). Compiles in parallel,
    then times each briefly."""
    if "tilelang" not in backends:
        return
    import torch

    from kernels import sparse_mla as kernel

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    largest: dict[str, dict] = {}
    for case in cases_:
        key = _choice_key(case)
        if case["t"] > largest.get(key, {"t": 0})["t"]:
            largest[key] = case

    def family(case):
        return _choice_key(case).split(",")[0]

    def knobs(case, choice):
        return kernel.sparse_mla_knobs(case["heads"], case["topk"], case["t"], sms, choice, family(case))

    def runner(case, x, choice, built):
        args = (x["q"], x["kv"], x["indices"], sm_scale(case), case["d_v"])
        return lambda: kernel.sparse_mla(*args, out=x["out"], lse=x["out_lse"], choice=choice, family=family(case))

    search(KnobCache("sparse_mla", KERNEL_FILES), largest, lambda case: range(len(kernel.CANDIDATES[family(case)])),
           compile_one=lambda case, choice: kernel.build(case["heads"], case["d_qk"], case["d_v"], case["topk"],
                                                         sm_scale(case), knobs(case, choice)),
           runner=runner, make_inputs=lambda case: make_inputs(case, 0, "cuda"),
           encode=lambda choice: {"choice": choice})


def build_tilelang(case: dict, inputs: dict):
    from kernels.sparse_mla import sparse_mla

    found = KnobCache("sparse_mla", KERNEL_FILES).get(_choice_key(case))
    choice = found["choice"] if found else 0
    q, kv, idx, out, lse = (inputs[k] for k in ("q", "kv", "indices", "out", "out_lse"))
    scale = sm_scale(case)
    sparse_mla(q, kv, idx, scale, case["d_v"], out=out, lse=lse, choice=choice)  # compile outside the timed callable
    return lambda: sparse_mla(q, kv, idx, scale, case["d_v"], out=out, lse=lse, choice=choice)


def build_torch(case: dict, inputs: dict):
    import torch

    out, lse = inputs["out"], inputs["out_lse"]

    def run():
        _chunked(case, inputs, torch.bfloat16, out, lse)
        return out, lse

    return run


def build_flash_mla(case: dict, inputs: dict):
    from flash_mla import flash_mla_sparse_fwd

    import torch

    q, kv, idx = inputs["q"], inputs["kv"], inputs["indices"]
    scale, d_v, h = sm_scale(case), case["d_v"], case["heads"]
    if h < 64:  # its kernels take 64 or 128 heads: zero heads pad q, as its users do (outside the timing)
        q = torch.cat([q, q.new_zeros(q.shape[0], 64 - h, q.shape[2])], dim=1)

    def run():
        out, _max_logits, lse = flash_mla_sparse_fwd(q, kv, idx, scale, d_v)
        return out[:, :h], lse[:, :h]  # natural-log lse, as FlashMLA's tests/ref.py defines it

    return run


def upstream_supports(case: dict):
    """The cases TileLang's published sparse MLA forward (sparse_mla_fwd_pipelined.py) implements:
    d_qk 576 / d_v 512, top-k in pairs of 64-index blocks, heads a multiple of 64 above 64, and no
    padded index: it loads no kv row for one (an index past the query's position; it would read
    our -1 as a row) but still adds that shared-memory row's stale contents, weighted 0, to the
    scores and output (its own test pads only after 1024 valid indices). None, or why not."""
    if (case["d_qk"], case["d_v"]) != (576, 512):
        return "the example is written for d_qk 576 and d_v 512"
    if case["topk"] % 128:
        return f"the example takes top-k in pairs of 64-index blocks (a multiple of 128), not {case['topk']}"
    if case["heads"] > 64 and case["heads"] % 64:
        return f"the example splits more than 64 heads in groups of 64, not {case['heads']}"
    if case["s"] - case["t"] + 1 < case["topk"]:
        return (f"the example takes no padded index (the first query here sees {case['s'] - case['t'] + 1} "
                f"positions, fewer than topk={case['topk']})")
    return None


def build_tilelang_upstream(case: dict, inputs: dict):
    """TileLang's published sparse MLA forward, the pipelined one, kv stride 1. Its tensors carry a
    leading batch dim (1 here) and query i sits at position q_start + i, q_start = s - t (which
    `upstream_supports` keeps > 1, as its assert wants). Its kernel leaves its LSE output
    unwritten: the gate compares the output only and says so in the row."""
    import torch

    t, s = case["t"], case["s"]
    q, kv, idx = inputs["q"][None], inputs["kv"][None], inputs["indices"][None]
    kernel = upstream.compiled(("sparse_mla", t, s, case["topk"], sm_scale(case)), lambda: upstream.example(
        upstream.SPARSE_MLA).sparse_mla_fwd_interface(q, kv, idx, s - t, 1, sm_scale(case), return_kernel=True))
    start = torch.tensor([s - t], dtype=torch.int32, device=q.device)
    lse = upstream.NotReturned("lse: the kernel of TileLang's sparse_mla_fwd_pipelined.py does not write it")

    def run():
        out, _unwritten = kernel(q, kv, idx, start)
        return out[0], lse

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
        Backend("flash_mla", build=build_flash_mla, probe=upstream.baseline_probe(
            "flash_mla", "flash_mla", attrs=("flash_mla_sparse_fwd",), capability=(9, 10))),
        Backend("tilelang_upstream", build=build_tilelang_upstream, probe=upstream.upstream_probe(upstream.SPARSE_MLA),
                dtypes=("bf16",), supports=upstream_supports),
    ],
    baseline="torch",
    validate_case=validate_case,
    flops_dtype=lambda case: "bf16",
    prepare=prepare,
    sources=("experiments/_dsa.py",),
    schedule=lambda case: KnobCache("sparse_mla", KERNEL_FILES).describe(_choice_key(case)),
)
