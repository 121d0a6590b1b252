"""FlashAttention forward in TileLang: one builder, a knob table, and a thin torch wrapper.

Layout is BSHD (as flash_attn): q [b, s_q, h, d], k and v [b, s_k, h_kv, d], o [b, s_q, h, d].
Causal masking is aligned bottom-right, as FlashAttention does when s_q != s_k: query row r
may attend key c when c <= r + (s_k - s_q). A query row with no key at all returns zeros.
GQA: query head `h` reads KV head `h // (h / h_kv)`.
"""
# No `from __future__ import annotations`: TileLang evaluates the prim_func annotations eagerly.

from dataclasses import asdict, dataclass
from typing import Optional

from kernels._compile import compile_kernel

HEAD_DIMS = (64, 128, 256)
DTYPES = ("float16", "bfloat16")
LOG2E = 1.44269504088896340736
# Finite stand-in for "no score seen yet": exp2(masked - floor) stays 0 and exp2(floor - floor)
# stays 1, so a row whose first key blocks are all masked never produces inf - inf = NaN.
NO_SCORE = -1.0e30
PASS_CONFIGS = {"tl.enable_fast_math": True}


@dataclass(frozen=True)
class Knobs:
    """Schedule knobs of `flash_attention_fwd`; none of them changes the result."""

    block_M: int = 128  # query rows per CTA (64 per consumer warpgroup)
    block_N: int = 128  # keys per inner step
    num_stages: int = 2  # K/V shared-memory buffers in flight
    threads: int = 256  # consumer threads; the TMA producer warpgroup comes on top


def flash_attention_fwd(batch: int, heads: int, kv_heads: int, seq_q: int, seq_k: int, dim: int,
                        causal: bool, dtype: str = "float16", block_M: int = 128,
                        block_N: int = 128, num_stages: int = 2, threads: int = 256):
    """Build the forward kernel: main(Q, K, V, O); one CTA owns block_M query rows of one head."""
    import tilelang.language as T

    groups = heads // kv_heads
    scale = LOG2E / dim**0.5  # softmax in base 2: exp(x / sqrt(d)) = exp2(x * scale)
    offset = seq_k - seq_q  # bottom-right causal alignment
    m_blocks = T.ceildiv(seq_q, block_M)
    accum = "float32"

    @T.prim_func
    def main(Q: T.Tensor([batch, seq_q, heads, dim], dtype),
             K: T.Tensor([batch, seq_k, kv_heads, dim], dtype),
             V: T.Tensor([batch, seq_k, kv_heads, dim], dtype),
             O: T.Tensor([batch, seq_q, heads, dim], dtype)):
        with T.Kernel(m_blocks, heads, batch, threads=threads) as (bx_launch, head, b):
            # Causal rows near the end see the most keys: launch them first to shorten the tail.
            bx = m_blocks - 1 - bx_launch if causal else bx_launch
            Q_shared = T.alloc_shared([block_M, dim], dtype)
            K_shared = T.alloc_shared([block_N, dim], dtype)
            V_shared = T.alloc_shared([block_N, dim], dtype)
            acc_s = T.alloc_fragment([block_M, block_N], accum)
            p = T.alloc_fragment([block_M, block_N], dtype)
            acc_o = T.alloc_fragment([block_M, dim], accum)
            row_max = T.alloc_fragment([block_M], accum)
            row_max_prev = T.alloc_fragment([block_M], accum)
            row_rescale = T.alloc_fragment([block_M], accum)
            row_sum = T.alloc_fragment([block_M], accum)
            denom = T.alloc_fragment([block_M], accum)

            T.copy(Q[b, bx * block_M:(bx + 1) * block_M, head, :], Q_shared)
            T.fill(acc_o, 0)
            T.fill(denom, 0)
            T.fill(row_max, NO_SCORE)
            # Keys past the last row's causal limit are never visited.
            n_blocks = (T.max(0, T.min(T.ceildiv(seq_k, block_N),
                                       T.ceildiv((bx + 1) * block_M + offset, block_N)))
                        if causal else T.ceildiv(seq_k, block_N))
            for k in T.Pipelined(n_blocks, num_stages=num_stages):
                T.copy(K[b, k * block_N:(k + 1) * block_N, head // groups, :], K_shared)
                # Only blocks crossing the diagonal (causal) or the ragged end pay for the mask; for
                # causal the diagonal test also covers keys >= seq_k of every real query row.
                if ((k + 1) * block_N - 1 > bx * block_M + offset) if causal else ((k + 1) * block_N > seq_k):
                    for i, j in T.Parallel(block_M, block_N):
                        acc_s[i, j] = T.if_then_else(
                            (k * block_N + j <= bx * block_M + i + offset) if causal else (k * block_N + j < seq_k),
                            0, -T.infinity(accum))
                else:
                    T.clear(acc_s)
                T.gemm(Q_shared, K_shared, acc_s, transpose_B=True, policy=T.GemmWarpPolicy.FullRow)
                # Online softmax: new running max, rescale factor for what was accumulated so far.
                T.copy(row_max, row_max_prev)
                T.reduce_max(acc_s, row_max, dim=1, clear=False)
                for i in T.Parallel(block_M):
                    row_rescale[i] = T.exp2(row_max_prev[i] * scale - row_max[i] * scale)
                for i, j in T.Parallel(block_M, block_N):
                    acc_s[i, j] = T.exp2(acc_s[i, j] * scale - row_max[i] * scale)
                T.reduce_sum(acc_s, row_sum, dim=1)
                for i in T.Parallel(block_M):
                    denom[i] = denom[i] * row_rescale[i] + row_sum[i]
                T.copy(acc_s, p)
                for i, j in T.Parallel(block_M, dim):
                    acc_o[i, j] *= row_rescale[i]
                T.copy(V[b, k * block_N:(k + 1) * block_N, head // groups, :], V_shared)
                T.gemm(p, V_shared, acc_o, policy=T.GemmWarpPolicy.FullRow)
            for i, j in T.Parallel(block_M, dim):
                acc_o[i, j] = T.if_then_else(denom[i] > 0, acc_o[i, j] / denom[i], 0)
            # Q's tile is dead now: stage the output through it (head dim 256 fits 2 K/V stages).
            T.copy(acc_o, Q_shared)
            T.copy(Q_shared, O[b, bx * block_M:(bx + 1) * block_M, head, :])

    return main


# Heuristic table per head dim (H100 SXM). Two consumer warpgroups own 64 query rows each; the
# head-dim-256 tile halves block_N so that Q + 2 stages of K and V stay within shared memory.
_TABLE = {
    64: Knobs(block_M=128, block_N=128, num_stages=2, threads=256),
    128: Knobs(block_M=128, block_N=128, num_stages=2, threads=256),
    256: Knobs(block_M=128, block_N=64, num_stages=2, threads=256),
}
# What a schedule search (experiments/flash_attention.py, on a GPU) tries per head dim; the
# table's entry comes first. Sizes follow FA3's Hopper tiles (e.g. 128 x 176 at d 128, 128 x 80
# at d 256) and their neighbours.
CANDIDATES = {
    64: [_TABLE[64], Knobs(128, 64, 2, 256), Knobs(128, 128, 3, 256), Knobs(192, 128, 2, 384),
         Knobs(64, 128, 2, 128)],
    128: [_TABLE[128], Knobs(128, 64, 2, 256), Knobs(128, 128, 1, 256), Knobs(128, 176, 2, 256),
          Knobs(64, 128, 2, 128)],
    256: [_TABLE[256], Knobs(128, 64, 1, 256), Knobs(128, 80, 2, 256), Knobs(64, 64, 2, 128),
          Knobs(128, 128, 1, 256)],
}


def validate(batch: int, heads: int, kv_heads: int, seq_q: int, seq_k: int, dim: int,
             dtype: str) -> None:
    """Refuse what the kernel does not support, with a message, before anything is compiled."""
    if dim not in HEAD_DIMS:
        raise ValueError(f"flash_attention: head dim {dim} unsupported; supported: {HEAD_DIMS}")
    if dtype not in DTYPES:
        raise ValueError(f"flash_attention: dtype {dtype} unsupported; supported: {DTYPES}")
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(f"flash_attention: {heads} query heads is not a multiple of {kv_heads} KV heads")
    if min(batch, seq_q, seq_k) < 1:
        raise ValueError(f"flash_attention: empty input (batch={batch}, s_q={seq_q}, s_k={seq_k})")


def check_tensors(q, k, v) -> tuple:
    """Shapes of q [b, s_q, h, d], k/v [b, s_k, h_kv, d], checked; returns validate()'s args."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("flash_attention: q, k, v must be 4-D [batch, seqlen, heads, head_dim]")
    if k.shape != v.shape:
        raise ValueError(f"flash_attention: k {tuple(k.shape)} and v {tuple(v.shape)} differ")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(f"flash_attention: q {tuple(q.shape)} and k {tuple(k.shape)} disagree on batch or head dim")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"flash_attention: dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    dtype = str(q.dtype).replace("torch.", "")
    args = (q.shape[0], q.shape[2], k.shape[2], q.shape[1], k.shape[1], q.shape[3], dtype)
    validate(*args)
    return args


def tuned_knobs(dim: int, causal: bool = False, dtype: str = "float16") -> Knobs:
    """The table's knobs for a head dim (a searched choice, when one exists, is the caller's)."""
    if dim not in _TABLE:
        raise ValueError(f"flash_attention: head dim {dim} unsupported; supported: {HEAD_DIMS}")
    return _TABLE[dim]


def compile_flash_attention(batch: int, heads: int, kv_heads: int, seq_q: int, seq_k: int, dim: int,
                            causal: bool, dtype: str, knobs: Knobs, *, with_out: bool = False, target=None):
    """Validate and compile (cached). with_out: kernel(q, k, v, o) writes o; else returns a new o."""
    validate(batch, heads, kv_heads, seq_q, seq_k, dim, dtype)
    return compile_kernel(flash_attention_fwd, batch, heads, kv_heads, seq_q, seq_k, dim, causal, dtype,
                          out_idx=None if with_out else [3], target=target, pass_configs=PASS_CONFIGS,
                          **asdict(knobs))


def prepare(q, k, v, causal: bool = False, *, knobs: Optional[Knobs] = None, out=None):
    """Validate, compile (cached) and return a zero-argument callable computing the forward.

    out: an optional [b, s_q, h, d] buffer the kernel writes (the callable returns it).
    """
    shape = check_tensors(q, k, v)
    if not (q.is_cuda and k.is_cuda and v.is_cuda):
        raise ValueError("flash_attention: q, k, v must be CUDA tensors")
    if out is not None and (out.shape != q.shape or out.dtype != q.dtype or not out.is_contiguous()):
        raise ValueError(f"flash_attention: out must be a contiguous {tuple(q.shape)} {q.dtype} tensor")
    skip = shape[3] - shape[4] if causal else 0
    if skip > 0:  # bottom-right causal, s_q > s_k: the first `skip` rows see no key at all
        return _with_empty_rows(q, k, v, skip, knobs, out)
    knobs = knobs or tuned_knobs(shape[5], causal, shape[6])
    kernel = compile_flash_attention(*shape[:6], causal, shape[6], knobs, with_out=out is not None)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if out is None:
        return lambda: kernel(q, k, v)

    def run():
        kernel(q, k, v, out)
        return out

    return run


def _with_empty_rows(q, k, v, skip: int, knobs, out):
    """Rows with no visible key are zero (FlashAttention's convention); the remaining rows are the
    square bottom-right causal problem on q[:, skip:], which the kernel computes."""
    import torch

    inner = prepare(q[:, skip:].contiguous(), k, v, True, knobs=knobs)
    res = out if out is not None else torch.empty_like(q)

    def run():
        res[:, :skip].zero_()
        res[:, skip:].copy_(inner())
        return res

    return run


def flash_attention(q, k, v, causal: bool = False, *, knobs: Optional[Knobs] = None):
    """o = softmax(q k^T / sqrt(d)) v per head, BSHD in and out (see the module docstring)."""
    return prepare(q, k, v, causal, knobs=knobs)()
