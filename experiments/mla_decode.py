"""MLA decode over a paged KV cache: TileLang vs FlashMLA, FlashInfer and a Triton kernel (claim C3).

Shapes follow DeepSeek-V3 in MQA form: one latent KV head of d_qk = 576 (512 latent + 64 rope),
V = its first 512 columns, h_q query heads, s_q new tokens per sequence (causal over them),
page block 64, FlashMLA's layouts (see kernels/mla_decode.py).

FLOPs = 2 * s_q * sum(s_k) * h_q * (d_qk + d_v)       (QK^T and PV, FlashMLA's formula)
Bytes = elt * (sum(s_k) * d_qk + b * s_q * h_q * (d_qk + d_v))   (KV read once, q read, out written)
The reference is fp32 attention over the gathered pages (out and natural-log LSE). The cache
past each sequence's length (the tail of its last page, and spare pages that the block table's
unused entries point at) is NaN, as in FlashMLA's test: a kernel that reads past a length fails.
"""
from __future__ import annotations

import math
from dataclasses import asdict

from experiments import upstream
from repro.measure.experiment import Backend, Experiment, TORCH_DTYPES, needs_module, selected_dtypes
from repro.measure.tuning import KnobCache, search

D_QK, D_V, PAGE = 576, 512, 64
SKEWED = ("varied", "one_long", "short", "over_page")
# match_<x>: equal lengths with the batch and total tokens of lengths=<x> (for the skew cost ratio)
LENGTHS = ("equal", *SKEWED, *(f"match_{x}" for x in SKEWED))
LONG_SEQLEN = 65536  # the adversarial case: one sequence this long, the rest at `seqlen`

KERNEL_FILES = ("kernels/mla_decode*.py", "kernels/mla_common.py")  # a searched schedule is kept per their version


def cases(cfg) -> list[dict]:
    """One case per point of each grid in cfg.grids, narrowed by `dtype=`."""

    chosen, out = set(selected_dtypes(cfg)), []
    for grid in cfg.grids:
        for b in grid.batch:
            for h_q in grid.h_q:
                for s_q in grid.s_q:
                    for seqlen in grid.seqlen:
                        for lengths in grid.lengths:
                            case = {"grid": grid.name, "batch": int(b), "h_q": int(h_q), "s_q": int(s_q),
                                    "seqlen": int(seqlen), "lengths": str(lengths), "dtype": str(grid.dtype)}
                            if case["dtype"] in chosen:
                                validate_case(case)
                                out.append(case)
    return out


def validate_case(case: dict) -> None:
    if case["h_q"] not in (16, 32, 64, 128) or case["s_q"] not in (1, 2):
        raise ValueError(f"h_q must be 16/32/64/128 and s_q 1/2; got h_q={case['h_q']}, s_q={case['s_q']}")
    if case["lengths"] not in LENGTHS:
        raise ValueError(f"lengths={case['lengths']!r}: allowed {', '.join(LENGTHS)}")
    if case["batch"] < 1 or case["seqlen"] < case["s_q"]:
        raise ValueError(f"batch must be >= 1 and seqlen >= s_q; got {case['batch']}, {case['seqlen']}")
    if case["dtype"] not in ("fp16", "bf16"):
        raise ValueError(f"dtype={case['dtype']!r}: allowed fp16, bf16")


def case_lengths(case: dict) -> list[int]:
    """Cache lengths, fixed per case (seeded by the case, not the trial), so flops() knows them.

    varied: FlashMLA's test draws max(normal(mean, mean/2), s_q); we cap at 3x the mean.
    one_long: the first sequence 64k, the rest `seqlen`. short: uniform in [s_q, seqlen].
    over_page: uniform in [seqlen + 1, seqlen + 16] (just past a page boundary at seqlen 64).
    match_<x>: the total of <x> spread equally (the first ones one token longer).
    """
    import torch

    b, mean, s_q = case["batch"], case["seqlen"], case["s_q"]
    kind = case["lengths"]
    if kind == "equal":
        return [mean] * b
    if kind.startswith("match_"):
        total = sum(case_lengths({**case, "lengths": kind[len("match_"):]}))
        return [total // b + (i < total % b) for i in range(b)]
    if kind == "one_long":
        return [LONG_SEQLEN] + [mean] * (b - 1)
    g = torch.Generator().manual_seed(1000003 * b + mean + 7 * s_q + case["h_q"])
    if kind == "short":
        return torch.randint(s_q, mean + 1, (b,), generator=g).tolist()
    if kind == "over_page":
        return torch.randint(mean + 1, mean + 17, (b,), generator=g).tolist()
    drawn = torch.normal(float(mean), mean / 2, (b,), generator=g)
    return [int(min(max(x, s_q), 3 * mean)) for x in drawn.tolist()]


def make_inputs(case: dict, seed: int, device: str) -> dict:
    """Fresh q and cache per seed; pages of all sequences shuffled (block table not the identity),
    with spare pages. Every cache entry past a sequence's length is NaN, and so are the spare
    pages, which the block table's unused entries name."""
    import torch

    lens = case_lengths(case)
    pages = [math.ceil(n / PAGE) for n in lens]
    spare = max(1, len(lens) // 4)
    g = torch.Generator(device="cpu").manual_seed(seed)
    perm = torch.randperm(sum(pages) + spare, generator=g, dtype=torch.int32)
    table = perm[sum(pages):][torch.randint(0, spare, (case["batch"], max(pages)), generator=g)]
    offsets = [0, *torch.tensor(pages).cumsum(0).tolist()]
    for i, n in enumerate(pages):
        table[i, :n] = perm[offsets[i]:offsets[i + 1]]
    dt = getattr(torch, TORCH_DTYPES[case["dtype"]])
    gd = torch.Generator(device=device).manual_seed(seed)
    q = torch.randn(case["batch"], case["s_q"], case["h_q"], D_QK, device=device, generator=gd).to(dt)
    kv = torch.randn(len(perm), PAGE, 1, D_QK, device=device, generator=gd).to(dt)
    kv[perm[sum(pages):].long().to(device)] = float("nan")
    for i, n in enumerate(lens):
        if n % PAGE:
            kv[int(table[i, pages[i] - 1]), n % PAGE:] = float("nan")
    return {"q": q, "kv_cache": kv, "block_table": table.contiguous().to(device),
            "cache_seqlens": torch.tensor(lens, dtype=torch.int32, device=device)}


def reference(case: dict, inputs: dict):
    from kernels.mla_common import mla_decode_reference

    return mla_decode_reference(inputs["q"], inputs["kv_cache"], inputs["block_table"], inputs["cache_seqlens"])


def flops(case: dict) -> float:
    return 2.0 * case["s_q"] * sum(case_lengths(case)) * case["h_q"] * (D_QK + D_V)


def bytes_moved(case: dict) -> float:
    rows = case["batch"] * case["s_q"] * case["h_q"]
    return 2.0 * (sum(case_lengths(case)) * D_QK + rows * (D_QK + D_V))


def _args(inputs: dict) -> tuple:
    return inputs["q"], inputs["kv_cache"], inputs["block_table"], inputs["cache_seqlens"]


def _bound_triton(case: dict, inputs: dict):
    """Check inputs and choose knobs once (one sync), so the timed call only launches."""
    import torch

    from kernels.triton import mla_decode as tr_mla

    args = _args(inputs)
    max_len = tr_mla.check_mla_inputs(*args)
    sm = torch.cuda.get_device_properties(0).multi_processor_count
    knobs = tr_mla.choose_triton_knobs(case["batch"], case["h_q"], case["s_q"], max_len, sum(case_lengths(case)), sm)
    tr_mla.mla_decode(*args, knobs=knobs, max_seqlen=max_len, check=False)  # compile outside fn
    return lambda: tr_mla.mla_decode(*args, knobs=knobs, max_seqlen=max_len, check=False)


def _knob_key(case: dict) -> str:
    """Schedules are searched per (h_q, s_q, dtype, cached tokens to the nearest power of two) on
    each GPU: the default's kernel follows the tokens per piece, so a schedule searched on 64-token
    sequences is not taken at 8k (it was, and the quick scoreboard's 8k rows lost a third)."""
    import torch

    scale = round(math.log2(max(1, sum(case_lengths(case)))))
    return f"h_q={case['h_q']},s_q={case['s_q']},{case['dtype']},tokens~2^{scale},{torch.cuda.get_device_name()}"


def tilelang_knobs(case: dict):
    """The schedule searched by `prepare` when cached, else the kernel's default table."""
    from kernels.mla_decode import Knobs, default_knobs

    found = KnobCache("mla_decode", KERNEL_FILES).get(_knob_key(case))
    return Knobs(**found) if found else default_knobs(case["h_q"], case["s_q"])


def prepare(cases_: list[dict], backends: list[str]) -> None:
    """Search TileLang schedules before the sweep (`search=false` keeps the defaults)."""
    if "tilelang" in backends:
        search_schedules(cases_)


def search_schedules(cases_: list[dict]) -> None:
    """Per key (h_q, s_q, dtype, token scale): every candidate, timed on the group's case with
    equal lengths nearest to batch 128 x 8k (the work plan makes the distribution matter little)."""
    from kernels import mla_decode as tl_mla
    from kernels._compile import compile_kernel

    groups: dict[str, tuple] = {}
    for c in cases_:
        rank = (c["lengths"] != "equal", abs(c["seqlen"] - 8192) + abs(c["batch"] - 128))
        if _knob_key(c) not in groups or rank < groups[_knob_key(c)][0]:
            groups[_knob_key(c)] = (rank, c)
    search(KnobCache("mla_decode", KERNEL_FILES), {key: c for key, (_, c) in groups.items()},
           lambda case: tl_mla.candidates(case["h_q"], case["s_q"]),
           compile_one=lambda c, k: compile_kernel(tl_mla.mla_decode_split_kv, c["h_q"], c["s_q"],
                                                   TORCH_DTYPES[c["dtype"]], D_QK ** -0.5, **tl_mla.builder_args(k)),
           runner=lambda case, inputs, k, kernel: _tilelang_runner(case, inputs, k),
           make_inputs=lambda case: make_inputs(case, 0, "cuda"), encode=asdict)


def _tilelang_runner(case: dict, inputs: dict, knobs):
    """Validate the inputs and make the work plan and its workspace once (outside the timed
    call, as FlashMLA's metadata is); the plan is validated like every other input."""
    from kernels import mla_decode as tl_mla

    args = _args(inputs)
    plan = tl_mla.make_plan(inputs["cache_seqlens"], case["h_q"], case["s_q"], knobs)
    tl_mla.mla_decode(*args, plan=plan, check=True)  # checks, and compiles outside fn
    return lambda: tl_mla.mla_decode(*args, plan=plan, check=False)


def build_tilelang(case: dict, inputs: dict):
    return _tilelang_runner(case, inputs, tilelang_knobs(case))


def build_triton(case: dict, inputs: dict):
    return _bound_triton(case, inputs)


def build_flash_mla(case: dict, inputs: dict):
    from flash_mla import flash_mla_with_kvcache, get_mla_metadata

    q, kv, table, lens = _args(inputs)
    meta, splits = get_mla_metadata(lens, case["s_q"] * case["h_q"], 1)  # scheduling, outside fn
    return lambda: flash_mla_with_kvcache(q, kv, table, lens, D_V, meta, splits, causal=True)


def build_flashinfer(case: dict, inputs: dict):
    """FlashInfer's own layouts: q split into latent/rope parts, caches split likewise (in build)."""
    import inspect

    import torch
    from flashinfer.mla import BatchMLAPagedAttentionWrapper

    q, kv, table, lens = _args(inputs)
    b, s_q, h_q, d = q.shape
    pages = [math.ceil(n / PAGE) for n in case_lengths(case)]
    kv_indptr = torch.tensor([0, *torch.tensor(pages).cumsum(0).tolist()], dtype=torch.int32, device=q.device)
    kv_indices = torch.cat([table[i, :n] for i, n in enumerate(pages)])
    qo_indptr = torch.arange(b + 1, dtype=torch.int32, device=q.device) * s_q
    wrapper = BatchMLAPagedAttentionWrapper(torch.empty(256 << 20, dtype=torch.uint8, device=q.device))
    wrapper.plan(qo_indptr, kv_indptr, kv_indices, lens, h_q, D_V, D_QK - D_V, PAGE, True, d ** -0.5,
                 q.dtype, kv.dtype)
    rows = q.reshape(b * s_q, h_q, d)
    q_nope, q_pe = rows[..., :D_V].contiguous(), rows[..., D_V:].contiguous()
    ckv, kpe = kv[:, :, 0, :D_V].contiguous(), kv[:, :, 0, D_V:].contiguous()
    base_e = "return_lse_base_on_e" in inspect.signature(wrapper.run).parameters
    extra = {"return_lse_base_on_e": True} if base_e else {}

    def run():
        out, lse = wrapper.run(q_nope, q_pe, ckv, kpe, return_lse=True, **extra)
        lse = lse if base_e else lse * math.log(2.0)  # older releases return log2-based LSE
        return out.view(b, s_q, h_q, D_V), lse.view(b, s_q, h_q).transpose(1, 2)

    return run


UPSTREAM_BLOCK_N = 64  # the example's KV tile (its main()'s block_N); it masks no partial tile


def upstream_supports(case: dict):
    """The cases TileLang's published MLA decode (example_mla_decode.py) implements: fp16 (the
    Backend's dtypes), one query token, one cache length for the whole batch (its KV is a plain
    [batch, seqlen, 1, d] tensor), a multiple of its KV tile. None, or why not."""
    if case["s_q"] != 1:
        return "the example decodes one query token per sequence (s_q 1)"
    lens = case_lengths(case)
    if len(set(lens)) > 1:
        return "the example takes one cache length for the whole batch (lengths=equal)"
    if lens[0] % UPSTREAM_BLOCK_N:
        return f"the example masks no partial KV tile: length {lens[0]} is not a multiple of {UPSTREAM_BLOCK_N}"
    return None


def build_tilelang_upstream(case: dict, inputs: dict):
    """TileLang's published MLA decode at its main()'s schedule (block_N 64, block_H min(64, h_q),
    no KV split). Its KV is one [batch, seqlen, 1, d] tensor, latent and rope parts apart, and so
    is q: the pages are gathered and split here, outside the timed call (as FlashInfer's layouts
    are). It returns no LSE: the gate compares the output only and says so in the row."""
    q, kv_cache, table, _ = _args(inputs)
    b, h, s = case["batch"], case["h_q"], case_lengths(case)[0]
    kv = kv_cache[table[:, :math.ceil(s / PAGE)].long()].reshape(b, -1, 1, D_QK)[:, :s]
    k_nope, k_pe = kv[..., :D_V].contiguous(), kv[..., D_V:].contiguous()
    del kv
    q_nope, q_pe = q[:, 0, :, :D_V].contiguous(), q[:, 0, :, D_V:].contiguous()
    kernel = upstream.example(upstream.MLA_DECODE).flashattn(
        b, h, 1, s, D_V, D_QK - D_V, UPSTREAM_BLOCK_N, min(64, h), 1, D_QK ** -0.5)  # compiles (cached)
    lse = upstream.NotReturned("lse: TileLang's example_mla_decode.py returns the output only")
    return lambda: (kernel(q_nope, q_pe, k_nope, k_pe).unsqueeze(1), lse)  # [b, 1, h_q, d_v]


def build_torch(case: dict, inputs: dict):
    return lambda: reference(case, inputs)


def reported(cfg) -> list[dict]:
    """FlashMLA's published H800 SXM5 figures (README), at its benchmark grid's largest shapes."""
    src = "deepseek-ai/FlashMLA README"
    base = {"grid": "flashmla", "batch": 128, "seqlen": 16384, "lengths": "equal", "dtype": "bf16",
            "backend": "flash_mla_paper"}
    return [
        {**base, "h_q": 16, "s_q": 1, "gbps": 3000.0,
         "source": f"{src}, first release 2025-02: up to 3000 GB/s memory-bound, H800 SXM5"},
        {**base, "h_q": 128, "s_q": 1, "tflops": 580.0,
         "source": f"{src}, first release 2025-02: up to 580 TFLOPS compute-bound, H800 SXM5"},
        {**base, "h_q": 128, "s_q": 2, "tflops": 660.0,
         "source": f"{src}, 2025-04-22 update: up to 660 TFLOPS compute-bound (h_q*s_q >= 128), H800 SXM5"},
    ]


EXPERIMENT = Experiment(
    name="mla_decode",
    cases=cases,
    make_inputs=make_inputs,
    reference=reference,
    flops=flops,
    bytes=bytes_moved,
    backends=[
        Backend("tilelang", build=build_tilelang, probe=needs_module("tilelang")),
        Backend("flash_mla", build=build_flash_mla, probe=upstream.baseline_probe(
            "flash_mla", "flash_mla", attrs=("flash_mla_with_kvcache", "get_mla_metadata"), capability=(9, 10))),
        Backend("flashinfer", build=build_flashinfer, probe=upstream.baseline_probe(
            "flashinfer", "flashinfer.mla", attrs=("BatchMLAPagedAttentionWrapper",))),
        Backend("tilelang_upstream", build=build_tilelang_upstream, probe=upstream.upstream_probe(upstream.MLA_DECODE),
                dtypes=("fp16",), supports=upstream_supports),
        Backend("triton", build=build_triton, probe=needs_module("triton")),
        Backend("torch", build=build_torch, timed=False, trusted=True),
    ],
    baseline="flash_mla",
    validate_case=validate_case,
    reported=reported,
    prepare=prepare,
    sources=("kernels/mla_decode.py", "kernels/mla_common.py", "kernels/triton/mla_decode.py"),
    schedule=lambda case: KnobCache("mla_decode", KERNEL_FILES).describe(_knob_key(case)),
)
