"""FlashAttention forward: TileLang (ours; its published example) vs FlashAttention-2/3/4, SDPA, Triton.

Layout BSHD: q [b, s_q, h, d], k [b, s_k, h_kv, d], v [b, s_k, h_kv, d_v]; causal masks align
bottom-right (query row r sees key c when c <= r + s_k - s_q), as flash_attn does. d_v = d except
head dim 192, whose V has 128 (DeepSeek's MLA prefill shape). Varlen cases (a `lengths` key: the
sequences' lengths joined by "+", q and k alike) pack their sequences as flash_attn_varlen_func takes them:
q [total, h, d] with cumulative lengths; the SDPA backends, which have no packed entry, run one
call per sequence (as a user of them would).

FLOPs = 2 * b * h * (d + d_v) * A, two GEMMs (QK^T and PV) of 2 flops per multiply-add over A visible
(query, key) pairs. A = s_q * s_k without a mask. With the causal mask A is the area of the
visible region of the (query, key) plane: s_q * s_k - s_q^2 / 2 when s_q <= s_k (a trapezoid),
s_k^2 / 2 when s_q > s_k. For s_q == s_k this is s^2 / 2, i.e. exactly the "halved" formula
of the FlashAttention papers, so our TFLOPS compare with their published figures. (The exact
count of unmasked pairs adds the diagonal, s_q / 2 more: under 0.1% from s = 512 on.)

Bytes = (q + o) + (k + v) read or written once: b * (d + d_v) * (s_q * h + s_k * h_kv) * elem.
Varlen cases sum both over their sequences.
The reference is fp32 math attention, chunked over batch, heads and query rows to fit memory.
"""
from __future__ import annotations

from dataclasses import asdict

from experiments import upstream
from experiments.vendor import FLASH_ATTENTION_BACKENDS
from repro.measure.experiment import Backend, Experiment, TORCH_DTYPES, needs_module, selected_dtypes
from repro.measure.tuning import KnobCache, search

REF_CHUNK_ELEMS = 1 << 28  # fp32 score elements per reference chunk (1 GiB)
FA3_SOURCE = "FA3 paper arXiv 2407.08608 Fig. (read off chart), H100 SXM5"
# FA3 paper, forward, fp16, 16k tokens, hidden 2048, seqlen 512..16k (figure values, approximate).
FA3_SEQLENS = (512, 1024, 2048, 4096, 8192, 16384)
FA3_FIGURE = {  # (head dim, causal) -> backend -> TFLOPS per seqlen (None: not in the figure)
    (64, False): {"fa2": (282, 306, 318, 321, 322, 324), "triton": (340, 382, 396, 400, 401, 403),
                  "cudnn": (335, 373, 395, 408, 412, 413), "fa3": (333, 392, 460, 476, 496, 497)},
    (64, True): {"fa2": (180, 229, 262, 284, 295, 299), "triton": (152, 291, 342, 363, 376, 363),
                 "cudnn": (225, 288, 334, 363, 379, 388), "fa3": (197, 265, 371, 420, 460, 473)},
    (128, False): {"fa2": (309, 350, 362, 368, 370, 370), "triton": (323, 372, 389, 389, 392, 395),
                   "cudnn": (497, 574, 617, 609, 600, 595), "fa3": (467, 565, 625, 638, 646, 648)},
    (128, True): {"fa2": (191, 260, 298, 319, 333, 335), "triton": (146, 273, 323, 353, 369, 378),
                  "cudnn": (315, 410, 484, 518, 529, 539), "fa3": (292, 423, 521, 579, 602, 616)},
    (256, False): {"fa2": (275, 313, 321, 323, 324, 326), "cudnn": (470, 546, 580, 581, 580, 581),
                   "fa3": (482, None, 707, 736, 746, 756)},
    (256, True): {"fa2": (208, 251, 278, 293, 297, 298), "cudnn": (308, 391, 450, 483, 497, 509),
                  "fa3": (286, 427, 537, 612, 628, 642)},
}

KERNEL_FILES = ("kernels/flash_attention*.py",)  # a searched schedule is kept per their version


def _case(batch, heads, heads_kv, seq_q, seq_k, head_dim, causal, dtype) -> dict:
    return {"batch": batch, "heads": heads, "heads_kv": heads_kv, "seq_q": seq_q, "seq_k": seq_k,
            "head_dim": head_dim, "causal": bool(causal), "dtype": dtype}


def cases(cfg) -> list[dict]:
    """The FA3 grid (tokens = batch * seqlen, hidden = heads * head dim), GQA cases, long context,
    the MLA-prefill head dims (192/128) and packed variable-length batches."""
    from kernels.flash_attention import HEAD_DIMS

    mla, varlen = cfg.get("mla"), cfg.get("varlen")
    dims = [*cfg.head_dims, cfg.gqa.head_dim, *([mla.head_dim] if mla else []), *(varlen.head_dims if varlen else [])]
    bad = [d for d in dims if d not in HEAD_DIMS]
    if bad:
        raise ValueError(f"flash_attention: head dim {bad[0]} unsupported; supported: {HEAD_DIMS}")
    out = []
    for dtype in selected_dtypes(cfg):
        for d in cfg.head_dims:
            for s in cfg.seqlens:
                for causal in cfg.causal:
                    out.append(_case(_div(cfg.tokens, s, "seqlens", "tokens"), _div(cfg.hidden, d, "head_dims", "hidden"),
                                     _div(cfg.hidden, d, "head_dims", "hidden"), s, s, d, causal, dtype))
        for heads, heads_kv in cfg.gqa.heads:
            for s in cfg.gqa.seqlens:
                for causal in cfg.causal:
                    out.append(_case(_div(cfg.tokens, s, "gqa.seqlens", "tokens"), heads, heads_kv, s, s,
                                     cfg.gqa.head_dim, causal, dtype))
        for extra in cfg.get("extra_cases") or []:
            for causal in cfg.causal:
                out.append(_case(extra.batch, extra.heads, extra.get("heads_kv", extra.heads), extra.seq_q,
                                 extra.get("seq_k", extra.seq_q), extra.head_dim, causal, dtype))
        for s in (mla.seqlens if mla else []):  # MLA prefill: 128 heads of 192 (q/k) and 128 (v)
            for causal in cfg.causal:
                out.append(_case(max(1, mla.tokens // s), mla.heads, mla.heads, s, s, mla.head_dim, causal, dtype))
        for d in (varlen.head_dims if varlen else []):
            for lengths in varlen.lengths:
                for causal in cfg.causal:
                    n = [int(x) for x in lengths]
                    out.append({**_case(len(n), varlen.heads, varlen.heads_kv, max(n), max(n), d, causal, dtype),
                                "lengths": "+".join(map(str, n))})
    keys = [tuple(sorted(c.items())) for c in out]
    if len(set(keys)) != len(keys):
        raise ValueError("flash_attention: the config lists a case twice")
    return out


def _div(total: int, part: int, key: str, total_key: str) -> int:
    if part <= 0 or total % part:
        raise ValueError(f"{key}: {part} does not divide {total_key}={total}")
    return total // part


def validate_case(case: dict) -> None:
    from kernels.flash_attention import validate

    if case["dtype"] not in TORCH_DTYPES:
        raise ValueError(f"flash_attention: dtype {case['dtype']} unsupported; allowed: {list(TORCH_DTYPES)}")
    validate(case["batch"], case["heads"], case["heads_kv"], case["seq_q"], case["seq_k"],
             case["head_dim"], TORCH_DTYPES[case["dtype"]])
    if "lengths" in case and (len(seq_lengths(case)) != case["batch"] or min(seq_lengths(case)) < 1):
        raise ValueError(f"flash_attention: lengths {case['lengths']!r} must list batch={case['batch']} positive lengths")


def seq_lengths(case: dict) -> list[int]:
    """A varlen case's sequence lengths (q and k alike); [] for a padded (BSHD) case."""
    return [int(x) for x in str(case["lengths"]).split("+")] if "lengths" in case else []


def head_dim_v(case: dict) -> int:
    from kernels.flash_attention import V_HEAD_DIMS

    return V_HEAD_DIMS.get(case["head_dim"], case["head_dim"])


def make_inputs(case: dict, seed: int, device: str) -> dict:
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    dt = getattr(torch, TORCH_DTYPES[case["dtype"]])
    b, d, dv, lengths = case["batch"], case["head_dim"], head_dim_v(case), seq_lengths(case)
    if lengths:  # packed: [total, heads, dim] with cumulative lengths
        total, cu = sum(lengths), torch.tensor([0, *lengths], device=device).cumsum(0).to(torch.int32)
        q = torch.randn(total, case["heads"], d, device=device, generator=g).to(dt)
        k = torch.randn(total, case["heads_kv"], d, device=device, generator=g).to(dt)
        v = torch.randn(total, case["heads_kv"], dv, device=device, generator=g).to(dt)
        return {"q": q, "k": k, "v": v, "cu_seqlens": cu, "max_seqlen": max(lengths),
                "out": q.new_empty(total, case["heads"], dv)}
    q = torch.randn(b, case["seq_q"], case["heads"], d, device=device, generator=g).to(dt)
    k = torch.randn(b, case["seq_k"], case["heads_kv"], d, device=device, generator=g).to(dt)
    v = torch.randn(b, case["seq_k"], case["heads_kv"], dv, device=device, generator=g).to(dt)
    return {"q": q, "k": k, "v": v, "out": q.new_empty(*q.shape[:3], dv)}


def sequences(inputs: dict):
    """(q, k, v) of each packed sequence as [1, len, heads, dim] views."""
    cu = inputs["cu_seqlens"].tolist()
    for a, e in zip(cu[:-1], cu[1:]):
        yield tuple(inputs[n][a:e].unsqueeze(0) for n in ("q", "k", "v"))


def reference(case: dict, inputs: dict):
    """fp32 softmax(q k^T / sqrt(d)) v, bottom-right causal; rows without a key give 0."""
    if "cu_seqlens" in inputs:
        import torch

        return torch.cat([attention_reference(q, k, v, case["causal"])[0] for q, k, v in sequences(inputs)])
    return attention_reference(inputs["q"], inputs["k"], inputs["v"], case["causal"])


def attention_reference(q, k, v, causal: bool):
    import torch

    b, s_q, h, d = q.shape
    s_k, h_kv = k.shape[1], k.shape[2]
    group = h // h_kv
    out = torch.empty(b, s_q, h, v.shape[3], device=q.device, dtype=torch.float32)
    rows = max(1, min(s_q, REF_CHUNK_ELEMS // max(1, group * s_k)))
    keys = torch.arange(s_k, device=q.device)
    for bi in range(b):
        for hk in range(h_kv):
            kf, vf = k[bi, :, hk].float(), v[bi, :, hk].float()
            for r0 in range(0, s_q, rows):
                qf = q[bi, r0:r0 + rows, hk * group:(hk + 1) * group].float().transpose(0, 1)
                scores = (qf @ kf.T) / d**0.5  # [group, rows, s_k]
                if causal:
                    limit = torch.arange(r0, r0 + qf.shape[1], device=q.device) + (s_k - s_q)
                    scores.masked_fill_(keys[None, :] > limit[:, None], float("-inf"))
                p = torch.softmax(scores, dim=-1).nan_to_num_(0.0)
                out[bi, r0:r0 + rows, hk * group:(hk + 1) * group] = (p @ vf).transpose(0, 1)
    return out


def visible_pairs(case: dict) -> float:
    """A of the module docstring: visible (query, key) area per (batch, head)."""
    s_q, s_k = case["seq_q"], case["seq_k"]
    if not case["causal"]:
        return float(s_q * s_k)
    return s_q * s_k - s_q * s_q / 2.0 if s_q <= s_k else s_k * s_k / 2.0


def _per_sequence(case: dict) -> list[dict]:
    """A varlen case as its sequences (batch 1 each); a padded case as itself."""
    base = {k: v for k, v in case.items() if k != "lengths"}
    return [{**base, "batch": 1, "seq_q": n, "seq_k": n} for n in seq_lengths(case)] or [base]


def flops(case: dict) -> float:
    dims = case["head_dim"] + head_dim_v(case)
    return sum(2.0 * c["batch"] * c["heads"] * dims * visible_pairs(c) for c in _per_sequence(case))


def bytes_moved(case: dict) -> float:
    dims = case["head_dim"] + head_dim_v(case)
    return sum(c["batch"] * dims * (c["seq_q"] * c["heads"] + c["seq_k"] * c["heads_kv"]) * 2.0
               for c in _per_sequence(case))


def _knob_key(case: dict) -> str:
    """Schedules are chosen per (head dim, causal, dtype) on each GPU, not per shape; the key names
    the candidate list too, so that a changed list is searched again."""
    import hashlib

    import torch

    from kernels.flash_attention import CANDIDATES

    cands = hashlib.sha256(repr(CANDIDATES[case["head_dim"]]).encode()).hexdigest()[:8]
    return f"d={case['head_dim']},causal={case['causal']},{case['dtype']},{torch.cuda.get_device_name()},{cands}"


def tilelang_knobs(case: dict):
    """The schedule searched by `prepare` when cached, else the per-head-dim table."""
    from kernels.flash_attention import Knobs, tuned_knobs

    found = KnobCache("flash_attention", KERNEL_FILES).get(_knob_key(case))
    return Knobs(**found) if found else tuned_knobs(case["head_dim"], case["causal"], TORCH_DTYPES[case["dtype"]])


def prepare(cases_: list[dict], backends: list[str]) -> None:
    """Search TileLang schedules before the sweep (`search=false` keeps the table's)."""
    if {"tilelang", "tilelang_dynamic"} & set(backends):
        search_schedules([c for c in cases_ if "lengths" not in c])


def search_schedules(cases_: list[dict]) -> None:
    """Per (head dim, causal, dtype): every candidate, timed on the group's case nearest to
    seqlen 4k (MHA preferred). A candidate whose output strays from the table's schedule (the
    first) is not chosen."""
    from kernels.flash_attention import CANDIDATES, compile_flash_attention

    groups: dict[str, tuple] = {}  # knob key -> (rank, representative case)
    for c in cases_:
        rank = (c["heads"] != c["heads_kv"], abs(c["seq_q"] - 4096), c["seq_q"])
        if _knob_key(c) not in groups or rank < groups[_knob_key(c)][0]:
            groups[_knob_key(c)] = (rank, c)
    search(KnobCache("flash_attention", KERNEL_FILES), {key: c for key, (_, c) in groups.items()},
           lambda case: CANDIDATES[case["head_dim"]],
           compile_one=lambda case, knobs: compile_flash_attention(*_shape(case), knobs, with_out=True),
           runner=lambda case, inputs, knobs, kernel: _runner(kernel, inputs),
           make_inputs=lambda case: make_inputs(case, 0, "cuda"), encode=asdict, screen=_screened)


def _screened(runners: list) -> list:
    """Runners whose output matches the first one's (fp32 relative L2 error <= 1e-2), others as
    exceptions: a fast but wrong schedule must not win the search."""
    if isinstance(runners[0], Exception):
        return runners
    ref = runners[0]().float().clone()
    out = [runners[0]]
    for run in runners[1:]:
        if not isinstance(run, Exception):
            try:
                err = ((run().float() - ref).norm() / ref.norm().clamp_min(1e-30)).item()
                run = run if err <= 1e-2 else ValueError(f"output differs from the table's schedule ({err:.2e})")
            except Exception as exc:  # a launch failure rules the candidate out
                run = exc
        out.append(run)
    return out


def _shape(case: dict) -> tuple:
    return (case["batch"], case["heads"], case["heads_kv"], case["seq_q"], case["seq_k"], case["head_dim"],
            case["causal"], TORCH_DTYPES[case["dtype"]])


def _runner(kernel, inputs: dict):
    q, k, v, out = inputs["q"], inputs["k"], inputs["v"], inputs["out"]

    def run():
        kernel(q, k, v, out)
        return out

    return run


def build_tilelang(case: dict, inputs: dict, knobs=None, dynamic: bool = False):
    """The searched schedule (else the table's), compiled for this shape (or, `dynamic`, once for
    every batch and sequence length). Varlen cases: the packed kernel."""
    from kernels.flash_attention import prepare as prepare_kernel

    if "cu_seqlens" in inputs:
        from kernels.flash_attention_varlen import prepare_varlen

        cu = inputs["cu_seqlens"]
        return prepare_varlen(inputs["q"], inputs["k"], inputs["v"], cu, cu, inputs["max_seqlen"], case["causal"],
                              out=inputs["out"])
    return prepare_kernel(inputs["q"], inputs["k"], inputs["v"], case["causal"],
                          knobs=knobs or tilelang_knobs(case), out=inputs["out"], dynamic=dynamic)


def build_tilelang_dynamic(case: dict, inputs: dict):
    """`tilelang` with batch and sequence lengths as run-time values: one kernel for all shapes."""
    return build_tilelang(case, inputs, dynamic=True)


def build_tilelang_serial(case: dict, inputs: dict):
    """`tilelang` pinned to the suite's first schedule (the table's serial one), for comparison."""
    from kernels.flash_attention import tuned_knobs

    return build_tilelang(case, inputs, knobs=tuned_knobs(case["head_dim"]))


def triton_supports(case: dict):
    """The Triton forward here takes one padded batch with V of q's head dim. None, or why not."""
    if "lengths" in case:
        return "this Triton kernel has no packed variable-length entry"
    if head_dim_v(case) != case["head_dim"]:
        return f"this Triton kernel takes V of q's head dim, not {head_dim_v(case)} beside {case['head_dim']}"
    return None


def build_triton(case: dict, inputs: dict):
    from kernels.triton.flash_attention import prepare as prepare_kernel

    fn = prepare_kernel(inputs["q"], inputs["k"], inputs["v"], case["causal"], out=inputs["out"])
    fn()  # autotunes here, outside the timed region
    return fn


def build_fa2(case: dict, inputs: dict):
    from flash_attn import flash_attn_func

    q, k, v, causal = inputs["q"], inputs["k"], inputs["v"], case["causal"]
    if "cu_seqlens" in inputs:
        from flash_attn import flash_attn_varlen_func

        cu, n = inputs["cu_seqlens"], inputs["max_seqlen"]
        return lambda: flash_attn_varlen_func(q, k, v, cu, cu, n, n, causal=causal)
    return lambda: flash_attn_func(q, k, v, causal=causal)  # GQA and bottom-right causal natively


def build_fa3(case: dict, inputs: dict):
    from flash_attn_interface import flash_attn_func, flash_attn_varlen_func

    q, k, v, causal = inputs["q"], inputs["k"], inputs["v"], case["causal"]
    cu, n = inputs.get("cu_seqlens"), inputs.get("max_seqlen")

    def run():
        out = (flash_attn_func(q, k, v, causal=causal) if cu is None
               else flash_attn_varlen_func(q, k, v, cu, cu, n, n, causal=causal))
        return out[0] if isinstance(out, tuple) else out  # some versions return (out, lse)

    return run


def build_fa4(case: dict, inputs: dict):
    """FlashAttention-4 (CuTe-DSL; compiles at its first call, the gate's, outside the timer). Its
    varlen entry's fourth positional parameter is `qv`, so the lengths go by keyword."""
    fa4 = upstream.baseline_module("fa4", "flash_attn.cute")
    q, k, v, causal = inputs["q"], inputs["k"], inputs["v"], case["causal"]
    cu, n = inputs.get("cu_seqlens"), inputs.get("max_seqlen")

    def run():
        out = (fa4.flash_attn_func(q, k, v, causal=causal) if cu is None else fa4.flash_attn_varlen_func(
            q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=n, max_seqlen_k=n, causal=causal))
        return out[0] if isinstance(out, tuple) else out  # (out, lse); lse None unless asked for

    return run


# Each example's main() schedule (its non-tuning run and its regression benchmark), at every head
# dim: at 256 the MHA example's 128 x 128 tiles still fit shared memory (3 x 64 KiB) but spill
# more registers than at 128 (ptxas, sm_90a); it runs as published, not re-tuned here.
UPSTREAM_SCHEDULES = {
    upstream.FLASH_ATTENTION: {"block_M": 128, "block_N": 128, "num_stages": 1, "threads": 128},
    upstream.FLASH_ATTENTION_GQA: {"block_M": 64, "block_N": 64, "num_stages": 2, "threads": 128},
}


def upstream_supports(case: dict):
    """The cases TileLang's published forward examples (example_mha_fwd_bshd.py; for GQA
    example_gqa_fwd_bshd.py) implement: fp16 (the Backend's dtypes), one padded BSHD batch, one
    seq_len for q and k/v (so causal alignment is moot), V of q's head dim. None, or why not."""
    if "lengths" in case:
        return "the example takes one padded BSHD batch, not packed variable lengths"
    if case["seq_q"] != case["seq_k"]:
        return "the example takes one seq_len for q and k/v"
    if head_dim_v(case) != case["head_dim"]:
        return f"the example's V has q's head dim ({case['head_dim']}), not {head_dim_v(case)}"
    return None


def build_tilelang_upstream(case: dict, inputs: dict):
    """TileLang's published forward at its main()'s schedule, on our BSHD inputs as they are:
    example_mha_fwd_bshd.py, or example_gqa_fwd_bshd.py (groups = heads / heads_kv) for GQA.
    Compiled once per shape (TileLang's own cache); it allocates its output in the call."""
    b, h, h_kv = case["batch"], case["heads"], case["heads_kv"]
    path = upstream.FLASH_ATTENTION if h == h_kv else upstream.FLASH_ATTENTION_GQA
    groups = {} if h == h_kv else {"groups": h // h_kv}
    kernel = upstream.example(path).flashattn(b, h, case["seq_q"], case["head_dim"], bool(case["causal"]),
                                              **groups, **UPSTREAM_SCHEDULES[path])
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    return lambda: kernel(q, k, v)


def build_sdpa_flash(case: dict, inputs: dict):
    from torch.nn.attention import SDPBackend

    return _build_sdpa(case, inputs, SDPBackend.FLASH_ATTENTION)


def build_cudnn(case: dict, inputs: dict):
    from torch.nn.attention import SDPBackend

    return _build_sdpa(case, inputs, SDPBackend.CUDNN_ATTENTION)


def _build_sdpa(case: dict, inputs: dict, backend):
    """PyTorch SDPA pinned to one backend, on BHSD views of the BSHD inputs (no copies).

    Bottom-right causal for s_q != s_k goes through `causal_lower_right`; GQA through
    enable_gqa, else K/V heads repeated here (outside the timed call) where a backend lacks it.
    """
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel
    from torch.nn.attention.bias import causal_lower_right

    if "cu_seqlens" in inputs:  # no packed entry: one call per sequence
        import torch

        runs = [_build_sdpa({**case, "seq_q": q.shape[1], "seq_k": k.shape[1]}, {"q": q, "k": k, "v": v}, backend)
                for q, k, v in sequences(inputs)]
        return lambda: torch.cat([run()[0] for run in runs])
    q, k, v = (inputs[n].transpose(1, 2) for n in ("q", "k", "v"))
    kwargs = {}
    if case["causal"] and case["seq_q"] == case["seq_k"]:
        kwargs["is_causal"] = True
    elif case["causal"]:
        kwargs["attn_mask"] = causal_lower_right(case["seq_q"], case["seq_k"])

    def make(k_, v_, **extra):
        def run():
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k_, v_, **kwargs, **extra).transpose(1, 2)
        return run

    if case["heads"] == case["heads_kv"]:
        return make(k, v)
    try:
        fn = make(k, v, enable_gqa=True)
        fn()
        return fn
    except (RuntimeError, TypeError):  # this backend (or torch) has no GQA path
        group = case["heads"] // case["heads_kv"]
        return make(k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1))


def build_torch(case: dict, inputs: dict):
    return lambda: reference(case, inputs)


def reported(cfg) -> list[dict]:
    """The FA3 paper's H100 figure (fp16) as reference rows, on the grid's own case keys."""

    if "fp16" not in selected_dtypes(cfg):
        return []
    rows = []
    for (d, causal), per_backend in FA3_FIGURE.items():
        for backend, values in per_backend.items():
            for s, tflops in zip(FA3_SEQLENS, values):
                if tflops is None:
                    continue
                case = _case(16384 // s, 2048 // d, 2048 // d, s, s, d, causal, "fp16")
                rows.append({**case, "backend": f"{backend}_paper", "tflops": float(tflops), "source": FA3_SOURCE})
    return rows


EXPERIMENT = Experiment(
    name="flash_attention",
    cases=cases,
    make_inputs=make_inputs,
    reference=reference,
    flops=flops,
    bytes=bytes_moved,
    backends=[
        Backend("tilelang", build=build_tilelang, probe=needs_module("tilelang"), vendors=("nvidia", "amd")),
        Backend("tilelang_dynamic", build=build_tilelang_dynamic, probe=needs_module("tilelang")),
        Backend("tilelang_serial", build=build_tilelang_serial, probe=needs_module("tilelang")),
        Backend("triton", build=build_triton, probe=needs_module("triton"), vendors=("nvidia", "amd"),
                supports=triton_supports),
        Backend("fa2", build=build_fa2, probe=needs_module("flash_attn")),
        Backend("sdpa_flash", build=build_sdpa_flash, vendors=("nvidia", "amd"), trusted=True),  # ROCm has a flash path too
        Backend("cudnn", build=build_cudnn, trusted=True),
        Backend("fa3", build=build_fa3, probe=needs_module("flash_attn_interface")),
        Backend("fa4", build=build_fa4, probe=upstream.baseline_module_probe("fa4", "flash_attn.cute", (
            "flash_attn_func", "flash_attn_varlen_func"))),
        Backend(upstream.NAME, build=build_tilelang_upstream, probe=upstream.upstream_probe(
            upstream.FLASH_ATTENTION, upstream.FLASH_ATTENTION_GQA), dtypes=("fp16",), supports=upstream_supports),
        Backend("torch", build=build_torch, timed=False, trusted=True),
        *FLASH_ATTENTION_BACKENDS,  # AMD and Ascend, detected at run time
    ],
    baseline="sdpa_flash",
    validate_case=validate_case,
    reported=reported,
    prepare=prepare,
    schedule=lambda case: KnobCache("flash_attention", KERNEL_FILES).describe(_knob_key(case)),
)
