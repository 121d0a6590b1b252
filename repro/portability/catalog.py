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

    return Build(m.gemm_kernel, (M, N, K, m.DTYPES[dtype]), asdict(m.heuristic_knobs(M, N, K)))


def flash_attention(batch: int, heads: int, kv_heads: int, seqlen: int, dim: int, causal: bool,
                    dtype: str = "float16") -> Build:
    from kernels import flash_attention as m

    knobs = asdict(m.tuned_knobs(dim, causal, dtype))
    return Build(m.flash_attention_fwd, (batch, heads, kv_heads, seqlen, seqlen, dim, causal, dtype),
                 knobs, m.PASS_CONFIGS)


def _mla_knobs(batch: int, heads: int, s_q: int, seqlen: int, dtype: str):
    from kernels import mla_decode as m

    return m.choose_knobs(batch, heads, s_q, dtype, seqlen)


def mla_decode(batch: int, heads: int, s_q: int, seqlen: int, dtype: str = "bfloat16") -> Build:
    from kernels import mla_decode as m

    k = _mla_knobs(batch, heads, s_q, seqlen, dtype)
    knobs = {"block_H": k.block_H, "block_N": k.block_N, "num_splits": k.num_splits, "stages": k.stages,
             "threads": k.threads}
    return Build(m.mla_decode_split_kv, (heads, s_q, dtype, m.D_QK ** -0.5), knobs)


def mla_decode_combine(batch: int, heads: int, s_q: int, seqlen: int, dtype: str = "bfloat16") -> Build:
    """The split-KV merge; the shape should be one that splits (a small batch, long cache)."""
    from kernels import mla_decode as m

    splits = max(2, _mla_knobs(batch, heads, s_q, seqlen, dtype).num_splits)
    return Build(m.mla_decode_combine, (heads, s_q, dtype, splits))


def sparse_mla(heads: int, dim: int, tail: int, topk: int) -> Build:
    from kernels import sparse_mla as m

    return Build(m.sparse_mla_fwd, (heads, dim, tail, topk), dict(m.sparse_mla_knobs(heads, topk)),
                 m.PASS_CONFIGS)


def dsa_indexer(heads: int, dim: int, tokens: int, seqlen: int) -> Build:
    from kernels import dsa_indexer as m

    return Build(m.lightning_indexer, (heads, dim), dict(m.indexer_knobs(heads, dim, tokens, seqlen)),
                 m.PASS_CONFIGS)


def dsa_topk(topk: int) -> Build:
    from kernels import dsa_topk as m

    return Build(m.topk_selector, (topk,), dict(m.topk_knobs(topk)), m.PASS_CONFIGS)


# Row name -> (kernel module, entry). The names are the config's `portability.kernels` keys.
KERNELS: dict[str, tuple[str, Callable[..., Build]]] = {
    "gemm": ("gemm", gemm),
    "flash_attention": ("flash_attention", flash_attention),
    "mla_decode": ("mla_decode", mla_decode),
    "mla_decode_combine": ("mla_decode", mla_decode_combine),
    "sparse_mla": ("sparse_mla", sparse_mla),
    "dsa_indexer": ("dsa_indexer", dsa_indexer),
    "dsa_topk": ("dsa_topk", dsa_topk),
}


def build_spec(name: str, params: dict) -> Build:
    if name not in KERNELS:
        raise KeyError(f"unknown kernel {name!r}; known: {', '.join(KERNELS)}")
    return KERNELS[name][1](**params)
