"""FlashAttention forward in TileLang: one builder, a knob table, and a thin torch wrapper.

Layout is BSHD (as flash_attn): q [b, s_q, h, d], k [b, s_k, h_kv, d], v [b, s_k, h_kv, d_v],
o [b, s_q, h, d_v]; d_v = d except head dim 192, whose V has 128 (DeepSeek's MLA prefill shape).
Causal masking is aligned bottom-right, as FlashAttention does when s_q != s_k: query row r
may attend key c when c <= r + (s_k - s_q). A query row with no key at all returns zeros.
GQA: query head `h` reads KV head `h // (h / h_kv)`. Packed variable-length batches:
kernels/flash_attention_varlen.py.
"""
# No `from __future__ import annotations`: TileLang evaluates the prim_func annotations eagerly.

from dataclasses import asdict, dataclass
from typing import Optional

from kernels._compile import compile_kernel

HEAD_DIMS = (64, 128, 192, 256)
V_HEAD_DIMS = {64: 64, 128: 128, 192: 128, 256: 256}  # V's (and the output's) head dim per q/k head dim
DTYPES = ("float16", "bfloat16")
LOG2E = 1.44269504088896340736
# Finite stand-in for "no score seen yet": exp2(masked - floor) stays 0 and exp2(floor - floor)
# stays 1, so a row whose first key blocks are all masked never produces inf - inf = NaN.
NO_SCORE = -1.0e30
PASS_CONFIGS = {"tl.enable_fast_math": True}
SERIAL, OVERLAP = "serial", "overlap"
SCHEDULES = (SERIAL, OVERLAP)


@dataclass(frozen=True)
class Knobs:
    """Schedule knobs of `flash_attention_fwd`; none of them changes the result.

    schedule: `serial` is the suite's first schedule: a T.Pipelined loop that TileLang itself
    warp-specializes (a TMA producer warpgroup), each GEMM waited on as soon as it is issued.
    `overlap` is FlashAttention-3's, written out: a producer warpgroup streams K and V through
    per-stage full/free barriers, and each consumer warpgroup issues QK^T of block j+1 and PV of
    block j asynchronously (wgmma), running the softmax of block j+1 while the PV GEMM runs.
    It needs Hopper (wgmma, TMA); `serial` also builds for other targets.
    """

    block_M: int = 128  # query rows per CTA (64 per consumer warpgroup)
    block_N: int = 128  # keys per inner step
    num_stages: int = 2  # K/V shared-memory buffers in flight
    threads: int = 256  # consumer threads; the TMA producer warpgroup comes on top
    schedule: str = SERIAL


def flash_attention_fwd(batch: int, heads: int, kv_heads: int, seq_q: int, seq_k: int, dim: int,
                        causal: bool, dtype: str = "float16", block_M: int = 128, block_N: int = 128,
                        num_stages: int = 2, threads: int = 256, schedule: str = "serial",
                        dim_v: int = 0, dynamic: bool = False):
    """Build the forward kernel: main(Q, K, V, O); one CTA owns block_M query rows of one head.

    dim_v: V's and O's head dim where it differs from Q's and K's (0: the same). dynamic: batch and
    both sequence lengths are run-time values, so that one kernel serves every shape.
    """
    import tilelang.language as T

    dim_v, S, accum, full_row = dim_v or dim, num_stages, "float32", T.GemmWarpPolicy.FullRow
    batch, seq_q, seq_k = T.dynamic("batch, seq_q, seq_k") if dynamic else (batch, seq_q, seq_k)
    # offset: bottom-right causal alignment; scale: softmax in base 2, exp(x / sqrt(d)) = exp2(x * scale)
    groups, offset, scale = heads // kv_heads, seq_k - seq_q, 1.44269504088896340736 / dim**0.5  # log2(e)
    m_blocks, n_keys = T.ceildiv(seq_q, block_M), T.ceildiv(seq_k, block_N)

    @T.macro
    def init_scores(acc_s, k, bx):
        # Only blocks crossing the diagonal (causal) or the ragged end pay for the mask; for
        # causal the diagonal test also covers keys >= seq_k of every real query row.
        if ((k + 1) * block_N - 1 > bx * block_M + offset) if causal else ((k + 1) * block_N > seq_k):
            for i, j in T.Parallel(block_M, block_N):
                acc_s[i, j] = T.if_then_else((k * block_N + j <= bx * block_M + i + offset) if causal
                                             else (k * block_N + j < seq_k), 0, -T.infinity(accum))
        else:
            T.clear(acc_s)

    @T.macro
    def softmax(acc_s, row_max, row_max_prev, row_rescale, row_sum, denom):
        # Online softmax: new running max, rescale factor for what was accumulated so far.
        T.copy(row_max, row_max_prev)
        T.reduce_max(acc_s, row_max, dim=1, clear=False)
        for i, j in T.Parallel(block_M, block_N):
            acc_s[i, j] = T.exp2(acc_s[i, j] * scale - row_max[i] * scale)
        T.reduce_sum(acc_s, row_sum, dim=1)
        for i in T.Parallel(block_M):
            row_rescale[i] = T.exp2(row_max_prev[i] * scale - row_max[i] * scale)
            denom[i] = denom[i] * row_rescale[i] + row_sum[i]

    @T.macro
    def load(src, dst, full, free, k, b, h):  # producer: wait for a free stage, start its TMA load
        T.barrier_wait(free[k % S], (k // S) % 2 ^ 1)
        T.tma_copy(src[b, k * block_N:(k + 1) * block_N, h, :], dst[k % S, :, :], barrier=full[k % S])
        T.barrier_arrive(full[k % S])

    @T.prim_func
    def main(Q: T.Tensor([batch, seq_q, heads, dim], dtype), K: T.Tensor([batch, seq_k, kv_heads, dim], dtype),
             V: T.Tensor([batch, seq_k, kv_heads, dim_v], dtype), O: T.Tensor([batch, seq_q, heads, dim_v], dtype)):
        with T.Kernel(m_blocks, heads, batch, threads=threads + 128 * (schedule != "serial")) as (bx_, head, b):
            bx = m_blocks - 1 - bx_ if causal else bx_  # causal: the longest rows first, a shorter tail
            Q_shared = T.alloc_shared([block_M, dim], dtype)
            # The output is staged through Q's tile once Q is dead, where it fits.
            O_shared = Q_shared if dim_v == dim else T.alloc_shared([block_M, dim_v], dtype)
            acc_s = T.alloc_fragment([block_M, block_N], accum)
            p = T.alloc_fragment([block_M, block_N], dtype)
            acc_o = T.alloc_fragment([block_M, dim_v], accum)
            row_max, row_max_prev, row_rescale, row_sum, denom = stats = [
                T.alloc_fragment([block_M], accum) for _ in range(5)]
            # Keys past the last row's causal limit are never visited (every row sees one key at least:
            # `prepare` leaves out the rows of s_q > s_k that see none).
            n_blocks = T.min(n_keys, T.ceildiv((bx + 1) * block_M + offset, block_N)) if causal else n_keys
            T.copy(Q[b, bx * block_M:(bx + 1) * block_M, head, :], Q_shared)
            # Stages of K/V: T.Pipelined adds its own to the serial schedule's tiles.
            K_shared = T.alloc_shared([S] * (schedule != "serial") + [block_N, dim], dtype)
            V_shared = T.alloc_shared([S] * (schedule != "serial") + [block_N, dim_v], dtype)
            # Per stage (overlap): K/V tile loaded (full: the producer's 128 threads), used (free: the consumers).
            k_full, v_full, k_free, v_free = [T.alloc_barrier([n] * S) for n in (128, 128, threads, threads)
                                              ] if schedule != "serial" else [None] * 4
            if schedule != "serial" and T.get_thread_binding() >= threads:  # overlap's producer: K, V by TMA
                T.set_max_nreg(24 if threads <= 256 else 32, 0)
                for k in T.serial(n_blocks):
                    load(K, K_shared, k_full, k_free, k, b, head // groups)
                    load(V, V_shared, v_full, v_free, k, b, head // groups)
            else:  # the consumers (serial: every thread, TileLang adds a producer); nothing lives across the split
                if schedule != "serial":
                    T.set_max_nreg(240 if threads <= 256 else 160, 1)
                T.fill(acc_o, 0)
                T.fill(denom, 0)
                T.fill(row_max, -1.0e30)  # finite "no score yet": see NO_SCORE
                if schedule == "serial":
                    for k in T.Pipelined(n_blocks, num_stages=num_stages):
                        T.copy(K[b, k * block_N:(k + 1) * block_N, head // groups, :], K_shared)
                        init_scores(acc_s, k, bx)
                        T.gemm(Q_shared, K_shared, acc_s, transpose_B=True, policy=full_row)
                        softmax(acc_s, *stats)
                        T.copy(acc_s, p)
                        for i, j in T.Parallel(block_M, dim_v):
                            acc_o[i, j] *= row_rescale[i]
                        T.copy(V[b, k * block_N:(k + 1) * block_N, head // groups, :], V_shared)
                        T.gemm(p, V_shared, acc_o, policy=full_row)
                else:  # QK^T of block 0, then the loop (64 query rows per consumer warpgroup)
                    T.barrier_wait(k_full[0], 0)
                    init_scores(acc_s, 0, bx)
                    T.gemm(Q_shared, K_shared[0, :, :], acc_s, transpose_B=True, policy=full_row)
                    T.barrier_arrive(k_free[0])
                    softmax(acc_s, *stats)
                    T.copy(acc_s, p)
                    for k in T.serial(1, n_blocks):  # QK^T of block k and PV of block k - 1 in flight
                        T.barrier_wait(k_full[k % S], (k // S) % 2)
                        init_scores(acc_s, k, bx)
                        T.wgmma_gemm(Q_shared, K_shared[k % S, :, :], acc_s, transpose_B=True, policy=full_row)
                        T.barrier_wait(v_full[(k - 1) % S], ((k - 1) // S) % 2)
                        T.wgmma_gemm(p, V_shared[(k - 1) % S, :, :], acc_o, policy=full_row)
                        T.wait_wgmma(1)  # QK^T is in; its softmax runs under the PV GEMM
                        T.barrier_arrive(k_free[k % S])
                        softmax(acc_s, *stats)
                        T.wait_wgmma(0)
                        T.barrier_arrive(v_free[(k - 1) % S])
                        for i, j in T.Parallel(block_M, dim_v):
                            acc_o[i, j] *= row_rescale[i]
                        T.copy(acc_s, p)
                    T.barrier_wait(v_full[(n_blocks - 1) % S], ((n_blocks - 1) // S) % 2)
                    T.gemm(p, V_shared[(n_blocks - 1) % S, :, :], acc_o, policy=full_row)
                for i, j in T.Parallel(block_M, dim_v):
                    acc_o[i, j] = T.if_then_else(denom[i] > 0, acc_o[i, j] / denom[i], 0)
                T.copy(acc_o, O_shared)
                T.copy(O_shared, O[b, bx * block_M:(bx + 1) * block_M, head, :])

    return main


# Heuristic table per head dim (H100 SXM): the serial schedule, which builds on every target. Two
# consumer warpgroups own 64 query rows each; the wider heads take narrower key blocks so that Q
# (and, at 192/128, a separate output tile) plus two stages of K and V fit in shared memory.
_TABLE = {
    64: Knobs(block_M=128, block_N=128, num_stages=2, threads=256),
    128: Knobs(block_M=128, block_N=128, num_stages=2, threads=256),
    192: Knobs(block_M=128, block_N=64, num_stages=2, threads=256),
    256: Knobs(block_M=128, block_N=64, num_stages=2, threads=256),
}


def _overlap(block_M: int, block_N: int, num_stages: int, threads: int) -> Knobs:
    return Knobs(block_M, block_N, num_stages, threads, OVERLAP)


# What a schedule search (experiments/flash_attention.py, on a GPU) tries per head dim; the
# table's entry comes first. Sizes follow FA3's Hopper tiles (128 x 176 at d 128, 128 x 80 at
# d 256, 192 x 128 with three consumer warpgroups at d 64) and their neighbours.
CANDIDATES = {
    64: [_TABLE[64], Knobs(128, 128, 3, 256), Knobs(192, 128, 2, 384), _overlap(128, 128, 2, 256),
         _overlap(128, 128, 3, 256), _overlap(192, 128, 2, 384)],
    128: [_TABLE[128], Knobs(128, 176, 2, 256), Knobs(128, 64, 2, 256), _overlap(128, 128, 2, 256),
          _overlap(128, 176, 2, 256), _overlap(128, 128, 3, 256)],
    192: [_TABLE[192], _overlap(128, 64, 2, 256), _overlap(128, 96, 2, 256), _overlap(128, 112, 2, 256)],
    256: [_TABLE[256], Knobs(128, 80, 2, 256), _overlap(128, 64, 2, 256), _overlap(128, 80, 2, 256)],
}


def validate(batch: int, heads: int, kv_heads: int, seq_q: int, seq_k: int, dim: int,
             dtype: str, dim_v: Optional[int] = None) -> None:
    """Refuse what the kernel does not support, with a message, before anything is compiled."""
    if dim not in HEAD_DIMS:
        raise ValueError(f"flash_attention: head dim {dim} unsupported; supported: {HEAD_DIMS}")
    if dim_v is not None and dim_v != V_HEAD_DIMS[dim]:
        raise ValueError(f"flash_attention: head dim {dim} with V head dim {dim_v} unsupported; "
                         f"supported (q/k, v): {sorted(V_HEAD_DIMS.items())}")
    if dtype not in DTYPES:
        raise ValueError(f"flash_attention: dtype {dtype} unsupported; supported: {DTYPES}")
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(f"flash_attention: {heads} query heads is not a multiple of {kv_heads} KV heads")
    if min(batch, seq_q, seq_k) < 1:
        raise ValueError(f"flash_attention: empty input (batch={batch}, s_q={seq_q}, s_k={seq_k})")


def check_tensors(q, k, v, *, dim_v_differs: bool = False) -> tuple:
    """Shapes of q [b, s_q, h, d], k [b, s_k, h_kv, d], v [b, s_k, h_kv, d_v] checked; returns
    validate()'s first seven args. d_v must equal d unless `dim_v_differs` (the TileLang kernel's
    192/128 pair)."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("flash_attention: q, k, v must be 4-D [batch, seqlen, heads, head_dim]")
    if k.shape[:3] != v.shape[:3] or (k.shape[3] != v.shape[3] and not dim_v_differs):
        raise ValueError(f"flash_attention: k {tuple(k.shape)} and v {tuple(v.shape)} differ")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(f"flash_attention: q {tuple(q.shape)} and k {tuple(k.shape)} disagree on batch or head dim")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"flash_attention: dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    dtype = str(q.dtype).replace("torch.", "")
    args = (q.shape[0], q.shape[2], k.shape[2], q.shape[1], k.shape[1], q.shape[3], dtype)
    validate(*args, dim_v=v.shape[3] if dim_v_differs else None)
    return args


def tuned_knobs(dim: int, causal: bool = False, dtype: str = "float16") -> Knobs:
    """The table's knobs for a head dim (a searched choice, when one exists, is the caller's)."""
    if dim not in _TABLE:
        raise ValueError(f"flash_attention: head dim {dim} unsupported; supported: {HEAD_DIMS}")
    return _TABLE[dim]


def compile_flash_attention(batch: int, heads: int, kv_heads: int, seq_q: int, seq_k: int, dim: int,
                            causal: bool, dtype: str, knobs: Knobs, *, dynamic: bool = False,
                            with_out: bool = False, target=None):
    """Validate and compile (cached). with_out: kernel(q, k, v, o) writes o; else returns a new o.
    dynamic: one kernel for every batch and sequence length (the shape given is only validated)."""
    validate(batch, heads, kv_heads, seq_q, seq_k, dim, dtype)
    if knobs.schedule not in SCHEDULES:
        raise ValueError(f"flash_attention: schedule {knobs.schedule!r} unknown; known: {SCHEDULES}")
    if dynamic:  # the same cache entry for every shape
        batch, seq_q, seq_k = 1, 1, 1
    return compile_kernel(flash_attention_fwd, batch, heads, kv_heads, seq_q, seq_k, dim, causal, dtype,
                          out_idx=None if with_out else [3], target=target, pass_configs=PASS_CONFIGS,
                          dim_v=0 if V_HEAD_DIMS[dim] == dim else V_HEAD_DIMS[dim], dynamic=dynamic,
                          **asdict(knobs))


def prepare(q, k, v, causal: bool = False, *, knobs: Optional[Knobs] = None, out=None, dynamic: bool = False):
    """Validate, compile (cached) and return a zero-argument callable computing the forward.

    out: an optional [b, s_q, h, d_v] buffer the kernel writes (the callable returns it).
    dynamic: use the kernel compiled once for all batch sizes and sequence lengths.
    """
    shape = check_tensors(q, k, v, dim_v_differs=True)
    if not (q.is_cuda and k.is_cuda and v.is_cuda):
        raise ValueError("flash_attention: q, k, v must be CUDA tensors")
    o_shape = (*q.shape[:3], v.shape[3])
    if out is not None and (tuple(out.shape) != o_shape or out.dtype != q.dtype or not out.is_contiguous()):
        raise ValueError(f"flash_attention: out must be a contiguous {o_shape} {q.dtype} tensor")
    skip = shape[3] - shape[4] if causal else 0
    if skip > 0:  # bottom-right causal, s_q > s_k: the first `skip` rows see no key at all
        return _with_empty_rows(q, k, v, skip, knobs, out, dynamic)
    knobs = knobs or tuned_knobs(shape[5], causal, shape[6])
    kernel = compile_flash_attention(*shape[:6], causal, shape[6], knobs, dynamic=dynamic,
                                     with_out=out is not None)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if out is None:
        return lambda: kernel(q, k, v)

    def run():
        kernel(q, k, v, out)
        return out

    return run


def _with_empty_rows(q, k, v, skip: int, knobs, out, dynamic: bool):
    """Rows with no visible key are zero (FlashAttention's convention); the remaining rows are the
    square bottom-right causal problem on q[:, skip:], which the kernel computes."""
    inner = prepare(q[:, skip:].contiguous(), k, v, True, knobs=knobs, dynamic=dynamic)
    res = out if out is not None else q.new_empty(*q.shape[:3], v.shape[3])

    def run():
        res[:, :skip].zero_()
        res[:, skip:].copy_(inner())
        return res

    return run


def flash_attention(q, k, v, causal: bool = False, *, knobs: Optional[Knobs] = None, dynamic: bool = False):
    """o = softmax(q k^T / sqrt(d)) v per head, BSHD in and out (see the module docstring)."""
    return prepare(q, k, v, causal, knobs=knobs, dynamic=dynamic)()
