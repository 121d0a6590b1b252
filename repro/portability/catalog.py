"""One representative build of every TileLang builder in kernels/, with its own schedule choice.

Each entry turns the shape given in the config into (builder, args, kwargs, pass configs), taking
the knobs from the kernel module's own table or heuristic, so the build is the one the
experiments would time on an H100 for that shape. Kernel modules are imported inside the
functions: a module that fails to import fails only its own rows.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Build:
    builder: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    pass_configs: dict | None = None

    def prim_func(self):
        return self.builder(*self.args, **self.kwargs)


def gemm(M: int, N: int, K: int, dtype: str = "fp16") -> Build:
    from kernels import gemm as m

    import inspect

    # Only the knobs the builder takes (the knob table may also hold how to launch, e.g. `algo`).
    takes = inspect.signature(m.gemm_kernel).parameters
    knobs = {k: v for k, v in asdict(m.heuristic_knobs(M, N, K)).items() if k in takes}
    return Build(m.gemm_kernel, (M, N, K, m.DTYPES[dtype]), knobs)


def gemm_splitk_reduce(M: int, N: int, K: int, dtype: str = "fp16") -> Build:
    """The split-K reduction, for a shape whose heuristic schedule splits K (few rows)."""
    from kernels import gemm as m

    split_k = m.heuristic_knobs(M, N, K).split_k
    if split_k < 2:
        raise ValueError(f"gemm {M}x{N}x{K}: the heuristic schedule does not split K; pick a shape with few rows")
    return Build(m.splitk_reduce, (M, N, split_k, m.DTYPES[dtype]))


def gemv(M: int, N: int, K: int, dtype: str = "fp16") -> Build:
    """The CUDA-core path for M <= 8: the first `gemv` candidate of the GEMM search, passed as
    kernels/gemm.py's compile_gemm passes it."""
    from kernels import gemm as m
    from kernels.gemv import gemv_kernel, vector_width

    knobs = next((k for k in m.candidates(M, N, K, dtype) if k.algo == "gemv"), None)
    if knobs is None:
        raise ValueError(f"gemm {M}x{N}x{K}: no gemv candidate (M must be <= 8)")
    return Build(gemv_kernel, (M, N, K, m.DTYPES[dtype]),
                 {"block_N": knobs.block_N, "rows_in_flight": knobs.block_K, "threads": knobs.threads,
                  "split_k": knobs.split_k, "vec": vector_width(N)})


def gemm_fp8(M: int, N: int, K: int, block_scaled: bool = True, fp8: str | None = None) -> Build:
    """The fp8 GEMM with the first of its module's candidates; `fp8` swaps its e4m3 type (see
    dsa_indexer)."""
    from kernels import gemm_fp8 as m

    builder = m.gemm_fp8_kernel if fp8 is None else _with_fp8(m, "gemm_fp8_kernel", fp8)
    knobs = asdict(m.fp8_candidates(M, N, K, block_scaled)[0])
    return Build(builder, (M, N, K), {**knobs, "block_scaled": block_scaled})


def flash_attention(batch: int, heads: int, kv_heads: int, seqlen: int, dim: int, causal: bool,
                    dtype: str = "float16") -> Build:
    from kernels import flash_attention as m

    knobs = asdict(m.tuned_knobs(dim, causal, dtype))
    return Build(m.flash_attention_fwd, (batch, heads, kv_heads, seqlen, seqlen, dim, causal, dtype),
                 knobs, m.PASS_CONFIGS)


def flash_attention_varlen(heads: int, kv_heads: int, dim: int, causal: bool, dtype: str = "float16") -> Build:
    """One kernel serves every packed batch (lengths are run-time values): no batch or seqlen."""
    from kernels import flash_attention as fa
    from kernels import flash_attention_varlen as m

    dim_v = 0 if fa.V_HEAD_DIMS[dim] == dim else fa.V_HEAD_DIMS[dim]
    return Build(m.flash_attention_varlen_fwd, (heads, kv_heads, dim, causal, dtype),
                 {**asdict(m._TABLE[dim]), "dim_v": dim_v}, m.PASS_CONFIGS)


def flash_attention_fwd_lse(batch: int, heads: int, kv_heads: int, seqlen: int, dim: int, causal: bool,
                            dtype: str = "bfloat16") -> Build:
    """The forward that saves the LSE for the backward (kernels/flash_attention_bwd.py)."""
    from kernels import flash_attention_bwd as m

    knobs = dict(zip(("block_M", "block_N", "num_stages", "threads"), m.FWD_TABLE[dim]))
    return Build(m.flash_attention_fwd_lse, (batch, heads, kv_heads, seqlen, seqlen, dim, causal, dtype),
                 knobs, m.PASS_CONFIGS)


def flash_attention_bwd_preprocess(batch: int, heads: int, kv_heads: int, seqlen: int, dim: int, causal: bool,
                                   dtype: str = "bfloat16") -> Build:
    """The backward's first launch, delta = rowsum(dO * O)."""
    from kernels import flash_attention_bwd as m

    return Build(m.flash_attention_bwd_preprocess, (batch, heads, seqlen, dim, dtype), {}, m.PASS_CONFIGS)


def flash_attention_bwd(batch: int, heads: int, kv_heads: int, seqlen: int, dim: int, causal: bool,
                        dtype: str = "bfloat16") -> Build:
    """The backward's main kernel (dQ, dK, dV), with its module's table of tiles."""
    from kernels import flash_attention_bwd as m

    return Build(m.flash_attention_bwd, (batch, heads, kv_heads, seqlen, seqlen, dim, causal, dtype),
                 asdict(m.BWD_TABLE[dim]), m.PASS_CONFIGS)


def mla_decode(batch: int, heads: int, s_q: int, seqlen: int, dtype: str = "bfloat16") -> Build:
    from kernels import mla_decode as m

    knobs = m.default_knobs(heads, s_q).builder_args()
    return Build(m.mla_decode_split_kv, (heads, s_q, dtype, m.D_QK ** -0.5), knobs)


def _mla_attention(heads: int, s_q: int, dtype: str, **knobs) -> Build:
    """The attention kernel of kernels.mla_decode's schedule `Knobs(**knobs)` (its KERNELS table)."""
    from kernels import mla_decode as m

    k = m.Knobs(**knobs)
    return Build(m.KERNELS[k.kernel], (heads, s_q, dtype, m.D_QK ** -0.5), k.builder_args())


def mla_decode_ws(batch: int, heads: int, s_q: int, seqlen: int, dtype: str = "bfloat16") -> Build:
    """The warp-specialized candidate (Hopper's wgmma, mbarriers and register budgets)."""
    return _mla_attention(heads, s_q, dtype, kernel="ws")


def mla_decode_seesaw(batch: int, heads: int, s_q: int, seqlen: int, dtype: str = "bfloat16") -> Build:
    """The seesaw kernel the default takes for long 32-row tiles on Hopper (four 32-key buffers)."""
    return _mla_attention(heads, s_q, dtype, kernel="seesaw", block_N=32, stages=4)


def mla_decode_pingpong(batch: int, heads: int, s_q: int, seqlen: int, dtype: str = "bfloat16") -> Build:
    """FlashMLA's schedule, the default's kernel for long 64-row tiles on Hopper (TMA, wgmma with register operands, mbarriers)."""
    return _mla_attention(heads, s_q, dtype, kernel="pingpong")


def mla_decode_combine(batch: int, heads: int, s_q: int, seqlen: int, dtype: str = "bfloat16") -> Build:
    """The merge of sequences the work plan cut into pieces."""
    from kernels import mla_decode as m

    return Build(m.mla_decode_combine, (heads, s_q, dtype))


def mla_decode_combine_wide(batch: int, heads: int, s_q: int, seqlen: int, dtype: str = "bfloat16") -> Build:
    """The wide merge of cut sequences, a candidate."""
    from kernels.mla_decode_combine import mla_decode_combine_wide as builder

    return Build(builder, (heads, s_q, dtype))


def _sparse_mla_knobs(m, kernel: str, heads: int, topk: int, tokens: int) -> dict:
    """The module's own schedule for the shape when it picks `kernel` (its BUILDERS key), else the
    first of its CANDIDATES that uses `kernel`; without the `kernel` key."""
    picks = [m.sparse_mla_knobs(heads, topk, tokens)]
    picks += [m.sparse_mla_knobs(heads, topk, tokens, choice=i, family=family)
              for family, options in m.CANDIDATES.items() for i in range(len(options))]
    knobs = dict(next(k for k in picks if k["kernel"] == kernel))
    del knobs["kernel"]
    return knobs


def sparse_mla(heads: int, dim: int, tail: int, topk: int, tokens: int = 4096) -> Build:
    """The plain software-pipelined schedule (`simple`), 64 heads per CTA."""
    from kernels import sparse_mla as m

    return Build(m.sparse_mla_fwd, (heads, dim, tail, topk), _sparse_mla_knobs(m, "simple", heads, topk, tokens),
                 m.PASS_CONFIGS)


def sparse_mla_pipelined(heads: int, dim: int, tail: int, topk: int, tokens: int = 4096) -> Build:
    """The warp-specialized schedule (producer warpgroup + two consumers), the wide default."""
    from kernels import sparse_mla as m

    return Build(m.sparse_mla_fwd_pipelined, (heads, dim, tail, topk),
                 _sparse_mla_knobs(m, "pipelined", heads, topk, tokens), m.PASS_CONFIGS)


def sparse_mla_narrow(heads: int, dim: int, tail: int, topk: int, tokens: int = 64) -> Build:
    """Few heads (tensor parallelism) and few queries: heads as the wgmma N, top-k split over CTAs."""
    from kernels import sparse_mla as m

    return Build(m.sparse_mla_fwd_narrow, (heads, dim, tail, topk),
                 _sparse_mla_knobs(m, "narrow", heads, topk, tokens), m.PASS_CONFIGS)


def sparse_mla_combine(heads: int, dim: int, tail: int, topk: int, tokens: int = 64) -> Build:
    """The merge of the narrow schedule's top-k splits; the shape should be one that splits."""
    from kernels import sparse_mla as m

    splits = _sparse_mla_knobs(m, "narrow", heads, topk, tokens).get("splits", 1)
    if splits < 2:
        raise ValueError(f"sparse MLA with {heads} heads, {tokens} queries: the narrow schedule does not split")
    return Build(m.sparse_mla_combine, (heads, dim, splits))


def dsa_indexer(heads: int, dim: int, tokens: int, seqlen: int, fp8: str | None = None) -> Build:
    """`fp8` swaps the kernel's fp8 type (its module's FP8, OCP e4m3 for Hopper), e.g. for the
    MI300X's `float8_e4m3fnuz`; the build runs in its own child process, so the swap stays there."""
    from kernels import dsa_indexer as m

    builder = m.lightning_indexer if fp8 is None else _with_fp8(m, "lightning_indexer", fp8)
    return Build(builder, (heads, dim), dict(m.indexer_knobs(heads, dim, tokens, seqlen)), m.PASS_CONFIGS)


def _with_fp8(module, name: str, dtype: str):
    """Builder `name` of `module`, building with the module's fp8 type `FP8` set to `dtype`."""
    original = getattr(module, name)

    def builder(*args, **kwargs):
        saved, module.FP8 = module.FP8, dtype
        try:
            return original(*args, **kwargs)
        finally:
            module.FP8 = saved

    builder.__name__ = original.__name__
    return builder


def dsa_topk(topk: int) -> Build:
    from kernels import dsa_topk as m

    return Build(m.topk_selector, (topk,), dict(m.topk_knobs(topk)), m.PASS_CONFIGS)


def flash_attention_ascend(batch: int, heads: int, seqlen: int, dim: int, dtype: str = "float16") -> Build:
    """The Ascend-dialect FlashAttention (kernels/ascend/): for the `ascend` target only."""
    from kernels.ascend import flash_attention as m

    return Build(m.flash_attention_ascend, (batch, heads, seqlen, dim, dtype))


def sparse_mla_bwd_delta(heads: int, dim: int, tail: int, topk: int) -> Build:
    """rowsum(out * d_out), the backward's first kernel."""
    from kernels import sparse_mla_bwd as m

    return Build(m.sparse_mla_bwd_delta, (heads, dim), {}, m.PASS_CONFIGS)


def sparse_mla_bwd(heads: int, dim: int, tail: int, topk: int) -> Build:
    """dq and the selected rows' dkv (kernels/sparse_mla_bwd.py), the module's own schedule."""
    from kernels import sparse_mla_bwd as m

    return Build(m.sparse_mla_bwd, (heads, dim, tail, topk), m.knobs(heads), m.PASS_CONFIGS)


# Row name -> (kernel module, entry). The names are the config's `portability.kernels` keys.
KERNELS: dict[str, tuple[str, Callable[..., Build]]] = {
    "gemm": ("gemm", gemm),
    "gemm_splitk_reduce": ("gemm", gemm_splitk_reduce),
    "gemv": ("gemv", gemv),
    "gemm_fp8": ("gemm_fp8", gemm_fp8),
    "flash_attention": ("flash_attention", flash_attention),
    "flash_attention_varlen": ("flash_attention_varlen", flash_attention_varlen),
    "flash_attention_fwd_lse": ("flash_attention_bwd", flash_attention_fwd_lse),
    "flash_attention_bwd_preprocess": ("flash_attention_bwd", flash_attention_bwd_preprocess),
    "flash_attention_bwd": ("flash_attention_bwd", flash_attention_bwd),
    "mla_decode": ("mla_decode", mla_decode),
    "mla_decode_combine": ("mla_decode", mla_decode_combine),
    "mla_decode_combine_wide": ("mla_decode", mla_decode_combine_wide),
    "mla_decode_ws": ("mla_decode", mla_decode_ws),
    "mla_decode_seesaw": ("mla_decode", mla_decode_seesaw),
    "mla_decode_pingpong": ("mla_decode", mla_decode_pingpong),
    "sparse_mla": ("sparse_mla", sparse_mla),
    "sparse_mla_pipelined": ("sparse_mla", sparse_mla_pipelined),
    "sparse_mla_narrow": ("sparse_mla", sparse_mla_narrow),
    "sparse_mla_combine": ("sparse_mla", sparse_mla_combine),
    "sparse_mla_bwd_delta": ("sparse_mla_bwd", sparse_mla_bwd_delta),
    "sparse_mla_bwd": ("sparse_mla_bwd", sparse_mla_bwd),
    "dsa_indexer": ("dsa_indexer", dsa_indexer),
    "dsa_topk": ("dsa_topk", dsa_topk),
    "flash_attention_ascend": ("ascend/flash_attention", flash_attention_ascend),
}


def build_spec(name: str, params: dict) -> Build:
    if name not in KERNELS:
        raise KeyError(f"unknown kernel {name!r}; known: {', '.join(KERNELS)}")
    return KERNELS[name][1](**params)
