"""Sparse MLA forward (DeepSeek-V3.2): each query attends to its top-k kv positions.

q [t, heads, 576] (512 latent + 64 rope dims), one shared latent kv head kv [s, 1, 576] whose
first 512 dims double as V, indices [t, 1, topk] (-1 = no position). For every query:

    out[h]  = softmax_j(scale * q[h] . kv[idx_j]) @ kv[idx_j, :512]
    lse[h]  = log(sum_j exp(scale * q[h] . kv[idx_j]))         (natural log)

Three schedules, one contract (invalid indices, < 0 or >= s, are masked; a query with no valid
index yields out = 0 and lse = -inf):
- `sparse_mla_fwd`: one CTA per (query, 64 heads); gathered rows, scores, online softmax in base 2
  and P @ V in one software pipeline, as in FlashAttention.
- `sparse_mla_fwd_pipelined`: the same tile, warp-specialized: a producer warpgroup gathers kv
  rows with cp.async into two stages while consumer warpgroup 0 computes the scores and the
  softmax and the left half of P @ V, and warpgroup 1 the right half; so warpgroup 1's P @ V of
  one tile overlaps warpgroup 0's scores and softmax of the next.
- `sparse_mla_fwd_narrow`: for 8-32 heads per GPU (tensor parallelism) and decode. The products
  are transposed (S^T = K Q^T, O^T = V^T P^T), so the wgmma M of 64 is filled by gathered kv rows
  and the heads are its N (8, 16 or 32), with no padded heads; the top-k list can be split over
  CTAs (`splits`), merged by `sparse_mla_combine`, when few queries would leave SMs idle.

Heads: any positive multiple of 8 (`SUPPORTED_HEADS`); multiples of 64 may take the wide kernels.
"""

import functools
import math

import tilelang.language as T

from kernels._compile import compile_kernel, sm_count

LOG2E = 1.4426950408889634
PASS_CONFIGS = {"tl.enable_fast_math": True}
HEADS_MULTIPLE = 8  # the narrow kernel's smallest wgmma N (one CTA takes 8, 16 or 32 heads)
SUPPORTED_HEADS = "a positive multiple of 8 (8, 16, 24, 32, 48, 64, 96, 128, ...)"


def sparse_mla_fwd(heads: int = 128, dim: int = 512, tail: int = 64, topk: int = 2048,
                   sm_scale: float | None = None, block_H: int = 64, block_I: int = 64,
                   num_stages: int = 2, threads: int = 256):
    """Builder: Q bf16 [t, heads, dim+tail], KV bf16 [s, 1, dim+tail], Indices int32 [t, 1, topk]
    -> Out bf16 [t, heads, dim], Lse fp32 [t, heads] (both outputs)."""
    t, s = T.dynamic("t"), T.dynamic("s")
    scale = (sm_scale if sm_scale is not None else (dim + tail) ** -0.5) * LOG2E
    groups = heads // block_H
    bf16, f32 = "bfloat16", "float32"

    @T.prim_func
    def main(Q: T.Tensor([t, heads, dim + tail], bf16), KV: T.Tensor([s, 1, dim + tail], bf16),
             Indices: T.Tensor([t, 1, topk], T.int32), Out: T.Tensor([t, heads, dim], bf16),
             Lse: T.Tensor([t, heads], f32)):
        with T.Kernel(t * groups, threads=threads) as bx:
            q_i, h0 = bx // groups, (bx % groups) * block_H
            q_shared = T.alloc_shared([block_H, dim], bf16)
            q_tail = T.alloc_shared([block_H, tail], bf16)
            kv_shared = T.alloc_shared([block_I, dim], bf16)
            k_tail = T.alloc_shared([block_I, tail], bf16)
            p_shared = T.alloc_shared([block_H, block_I], bf16)
            valid = T.alloc_fragment([block_I], "bool")
            acc_s = T.alloc_fragment([block_H, block_I], f32)
            acc_o = T.alloc_fragment([block_H, dim], f32)
            m = T.alloc_fragment([block_H], f32)
            m_prev = T.alloc_fragment([block_H], f32)
            denom = T.alloc_fragment([block_H], f32)
            block_sum = T.alloc_fragment([block_H], f32)
            T.copy(Q[q_i, h0:h0 + block_H, :dim], q_shared)
            T.copy(Q[q_i, h0:h0 + block_H, dim:], q_tail)
            T.fill(acc_o, 0)
            T.fill(denom, 0)
            T.fill(m, -(2.0**30))  # finite, so fully masked blocks give exp2(-inf) = 0, never NaN
            for it in T.Pipelined(T.ceildiv(topk, block_I), num_stages=num_stages):
                for i in T.Parallel(block_I):
                    idx = Indices[q_i, 0, T.min(it * block_I + i, topk - 1)]
                    valid[i] = it * block_I + i < topk and idx >= 0 and idx < s
                for i, d in T.Parallel(block_I, dim):
                    kv_shared[i, d] = KV[T.max(T.min(Indices[q_i, 0, T.min(it * block_I + i, topk - 1)], s - 1), 0), 0, d]
                for i, d in T.Parallel(block_I, tail):
                    k_tail[i, d] = KV[T.max(T.min(Indices[q_i, 0, T.min(it * block_I + i, topk - 1)], s - 1), 0), 0, dim + d]
                for h, i in T.Parallel(block_H, block_I):
                    acc_s[h, i] = T.if_then_else(valid[i], 0, -T.infinity(f32))
                T.gemm(q_shared, kv_shared, acc_s, transpose_B=True, policy=T.GemmWarpPolicy.FullRow)
                T.gemm(q_tail, k_tail, acc_s, transpose_B=True, policy=T.GemmWarpPolicy.FullRow)
                T.copy(m, m_prev)
                T.reduce_max(acc_s, m, dim=1, clear=False)
                for h in T.Parallel(block_H):
                    m[h] = T.max(m[h], m_prev[h])
                for h, i in T.Parallel(block_H, block_I):
                    acc_s[h, i] = T.exp2((acc_s[h, i] - m[h]) * scale)
                T.reduce_sum(acc_s, block_sum, dim=1)
                for h in T.Parallel(block_H):
                    denom[h] = denom[h] * T.exp2((m_prev[h] - m[h]) * scale) + block_sum[h]
                for h, d in T.Parallel(block_H, dim):
                    acc_o[h, d] = acc_o[h, d] * T.exp2((m_prev[h] - m[h]) * scale)
                T.copy(acc_s, p_shared)
                T.gemm(p_shared, kv_shared, acc_o, policy=T.GemmWarpPolicy.FullRow)
            for h, d in T.Parallel(block_H, dim):
                acc_o[h, d] = T.if_then_else(denom[h] > 0, acc_o[h, d] / denom[h], 0)
            for h in T.Parallel(block_H):  # back from base 2 to the natural log
                block_sum[h] = T.if_then_else(denom[h] > 0, (T.log2(denom[h]) + m[h] * scale) / LOG2E,
                                              -T.infinity(f32))
            T.copy(acc_o, Out[q_i, h0:h0 + block_H, :])
            T.copy(block_sum, Lse[q_i, h0:h0 + block_H])

    return main


def sparse_mla_fwd_pipelined(heads: int = 128, dim: int = 512, tail: int = 64, topk: int = 2048,
                             sm_scale: float | None = None, block_I: int = 64, regs: tuple = (240, 168, 80)):
    """Builder, as `sparse_mla_fwd` (heads a multiple of 64), with 384 threads: warpgroup 0 scores,
    softmax and out[:, :dim/2]; warpgroup 1 out[:, dim/2:]; warpgroup 2 gathers kv rows. `regs`:
    registers per thread of each warpgroup (setmaxnreg; at most 64K in all)."""
    t, s = T.dynamic("t"), T.dynamic("s")
    scale = (sm_scale if sm_scale is not None else (dim + tail) ** -0.5) * LOG2E
    H, BI, half, groups = 64, block_I, dim // 2, heads // 64
    pairs = -(-topk // (2 * BI))  # two stages per round; slots past topk are masked
    bf16, f32 = T.bfloat16, T.float32

    @T.prim_func
    def main(Q: T.Tensor([t, heads, dim + tail], bf16), KV: T.Tensor([s, 1, dim + tail], bf16),
             Indices: T.Tensor([t, 1, topk], T.int32), Out: T.Tensor([t, heads, dim], bf16),
             Lse: T.Tensor([t, heads], f32)):
        with T.Kernel(t * groups, threads=384) as bx:
            q_i, h0 = bx // groups, (bx % groups) * H
            q_shared = T.alloc_shared([H, dim + tail], bf16)
            kv_shared = T.alloc_shared([2, BI, dim + tail], bf16)
            valid = T.alloc_shared([2, BI], "bool")
            p_shared = T.alloc_shared([H, BI], bf16)
            alpha_shared, denom_shared = (T.alloc_shared([H], f32) for _ in range(2))
            acc_s = T.alloc_fragment([H, BI], f32)
            acc_l, acc_r = (T.alloc_fragment([H, half], f32) for _ in range(2))  # the two halves of out
            m, m_prev, denom, block_sum = (T.alloc_fragment([H], f32) for _ in range(4))
            q_ready = T.alloc_barrier(arrive_count=384)
            kv_ready = T.alloc_barrier(arrive_count=[128, 128])  # the producer's cp.async landed
            kv_free = T.alloc_barrier(arrive_count=[256, 256])  # both consumers are done with a stage
            p_ready = T.alloc_barrier(arrive_count=256)  # P and its rescale factors are in shared memory
            p_free = T.alloc_barrier(arrive_count=256)  # warpgroup 1 has read P
            tx = T.get_thread_binding()
            T.tma_copy(Q[q_i, h0:h0 + H, :], q_shared, barrier=q_ready)
            T.barrier_arrive(q_ready)
            if tx < 128:
                T.set_max_nreg(regs[0], 1)
                T.fill(acc_l, 0)
                T.fill(denom, 0)
                T.fill(m, -(2.0**30))  # finite, so fully masked tiles give exp2(-inf) = 0, never NaN
                T.barrier_wait(q_ready, 0)
                for it in T.serial(pairs):
                    for st in T.unroll(2):
                        T.barrier_wait(kv_ready[st], it & 1)
                        for h, i in T.Parallel(H, BI):
                            acc_s[h, i] = T.if_then_else(valid[st, i], 0, -T.infinity(f32))
                        T.wgmma_gemm(q_shared[:, :half], kv_shared[st, :, :half], acc_s, transpose_B=True)
                        T.wgmma_gemm(q_shared[:, half:dim], kv_shared[st, :, half:dim], acc_s, transpose_B=True)
                        T.wgmma_gemm(q_shared[:, dim:], kv_shared[st, :, dim:], acc_s, transpose_B=True)
                        T.wait_wgmma(0)
                        if it * 2 + st > 0:  # P of the previous tile must have been read
                            T.barrier_arrive(p_free)
                            T.barrier_wait(p_free, ((it * 2 + st) & 1) ^ 1)
                        T.copy(m, m_prev)
                        T.reduce_max(acc_s, m, dim=1, clear=False)
                        for h in T.Parallel(H):
                            m[h] = T.max(m[h], m_prev[h])
                            alpha_shared[h] = T.exp2((m_prev[h] - m[h]) * scale)
                        for h, i in T.Parallel(H, BI):
                            acc_s[h, i] = T.exp2((acc_s[h, i] - m[h]) * scale)
                        T.reduce_sum(acc_s, block_sum, dim=1)
                        for h in T.Parallel(H):
                            denom[h] = denom[h] * T.exp2((m_prev[h] - m[h]) * scale) + block_sum[h]
                            denom_shared[h] = denom[h]
                        for h, d in T.Parallel(H, half):
                            acc_l[h, d] = acc_l[h, d] * T.exp2((m_prev[h] - m[h]) * scale)
                        T.copy(acc_s, p_shared)
                        T.gemm(p_shared, kv_shared[st, :, :half], acc_l)
                        T.barrier_arrive(p_ready)
                        T.barrier_arrive(kv_free[st])
                for h, d in T.Parallel(H, half):
                    Out[q_i, h0 + h, d] = T.if_then_else(denom[h] > 0, acc_l[h, d] / denom[h], 0)
                for h in T.Parallel(H):  # back from base 2 to the natural log
                    block_sum[h] = T.if_then_else(denom[h] > 0, (T.log2(denom[h]) + m[h] * scale) / LOG2E,
                                                  -T.infinity(f32))
                T.copy(block_sum, Lse[q_i, h0:h0 + H])
            elif tx < 256:
                T.set_max_nreg(regs[1], 1)
                T.fill(acc_r, 0)
                for it in T.serial(pairs):
                    for st in T.unroll(2):
                        T.barrier_arrive(p_ready)
                        T.barrier_wait(p_ready, (it * 2 + st) & 1)
                        for h, d in T.Parallel(H, half):
                            acc_r[h, d] = acc_r[h, d] * alpha_shared[h]
                        T.gemm(p_shared, kv_shared[st, :, half:dim], acc_r)
                        T.barrier_arrive(kv_free[st])
                        T.barrier_arrive(p_free)  # the last of these completes no phase, harmlessly
                for h, d in T.Parallel(H, half):
                    Out[q_i, h0 + h, half + d] = T.if_then_else(denom_shared[h] > 0, acc_r[h, d] / denom_shared[h], 0)
            else:
                T.set_max_nreg(regs[2], 0)
                for it in T.serial(pairs):
                    for st in T.unroll(2):
                        T.barrier_wait(kv_free[st], (it & 1) ^ 1)
                        for r in T.serial(BI // 16):  # 8 threads per kv row, 16 bytes per cp.async
                            slot = (it * 2 + st) * BI + r * 16 + (tx - 256) // 8
                            idx = Indices[q_i, 0, T.min(slot, topk - 1)]
                            valid[st, slot % BI] = slot < topk and idx >= 0 and idx < s
                            for u in T.serial((dim + tail) // 64):
                                T.ptx_cp_async(T.access_ptr(kv_shared[st, slot % BI, u * 64 + tx % 8 * 8], "w", 8),
                                               T.access_ptr(KV[T.max(T.min(idx, s - 1), 0), 0, u * 64 + tx % 8 * 8],
                                                            "r", 8), 8)  # a real row: masked products stay finite
                        T.cp_async_barrier_noinc(kv_ready[st])

    return main


def sparse_mla_fwd_narrow(heads: int = 16, dim: int = 512, tail: int = 64, topk: int = 2048,
                          sm_scale: float | None = None, block_H: int = 16, block_I: int = 64,
                          num_stages: int = 2, threads: int = 128, splits: int = 1):
    """Builder: Q, KV, Indices as `sparse_mla_fwd` (heads a multiple of block_H: 8, 16 or 32; 256
    threads, two warpgroups that split the heads, only with 32)
    -> Out, Lse when splits == 1, else per-split OPart fp32 [t, splits, heads, dim], LsePart fp32
    [t, splits, heads] (every query gets `splits` CTAs, each a contiguous share of the top-k list)."""
    t, s = T.dynamic("t"), T.dynamic("s")
    scale = (sm_scale if sm_scale is not None else (dim + tail) ** -0.5) * LOG2E
    BH, BI, groups = block_H, block_I, heads // block_H
    per_split = -(-(-(-topk // BI)) // splits)  # kv tiles per CTA
    bf16, f32 = "bfloat16", "float32"
    out_shape, out_type = ([t, heads, dim], bf16) if splits == 1 else ([t, splits, heads, dim], f32)

    @T.prim_func
    def main(Q: T.Tensor([t, heads, dim + tail], bf16), KV: T.Tensor([s, 1, dim + tail], bf16),
             Indices: T.Tensor([t, 1, topk], T.int32), Out: T.Tensor(out_shape, out_type),
             Lse: T.Tensor(out_shape[:-1], f32)):
        with T.Kernel(t * groups, splits, threads=threads) as (bx, sp):
            q_i, h0 = bx // groups, (bx % groups) * BH
            q_shared = T.alloc_shared([BH, dim], bf16)
            q_tail = T.alloc_shared([BH, tail], bf16)
            kv_shared = T.alloc_shared([BI, dim], bf16)
            k_tail = T.alloc_shared([BI, tail], bf16)
            # 8 heads: P stored K-major ([heads, kv rows]); MN-major, an 8-head P is one 16-byte
            # column that TileLang's wgmma lowering rejects. 16/32 heads keep the measured layout.
            p_shared = T.alloc_shared([BH, BI] if BH == 8 else [BI, BH], bf16)
            alpha = T.alloc_shared([BH], f32)
            valid = T.alloc_fragment([BI], "bool")
            acc_s = T.alloc_fragment([BI, BH], f32)  # S^T: kv rows x heads
            acc_o = T.alloc_fragment([dim, BH], f32)  # O^T
            m, m_prev, denom, block_sum = (T.alloc_fragment([BH], f32) for _ in range(4))
            T.copy(Q[q_i, h0:h0 + BH, :dim], q_shared)
            T.copy(Q[q_i, h0:h0 + BH, dim:], q_tail)
            T.fill(acc_o, 0)
            T.fill(denom, 0)
            T.fill(m, -(2.0**30))
            for it in T.Pipelined(per_split, num_stages=num_stages):
                i0 = (sp * per_split + it) * BI
                for i in T.Parallel(BI):
                    idx = Indices[q_i, 0, T.min(i0 + i, topk - 1)]
                    valid[i] = i0 + i < topk and idx >= 0 and idx < s
                for i, d in T.Parallel(BI, dim):
                    kv_shared[i, d] = KV[T.max(T.min(Indices[q_i, 0, T.min(i0 + i, topk - 1)], s - 1), 0), 0, d]
                for i, d in T.Parallel(BI, tail):
                    k_tail[i, d] = KV[T.max(T.min(Indices[q_i, 0, T.min(i0 + i, topk - 1)], s - 1), 0), 0, dim + d]
                for i, h in T.Parallel(BI, BH):
                    acc_s[i, h] = T.if_then_else(valid[i], 0, -T.infinity(f32))
                T.gemm(kv_shared, q_shared, acc_s, transpose_B=True)
                T.gemm(k_tail, q_tail, acc_s, transpose_B=True)
                T.copy(m, m_prev)
                T.reduce_max(acc_s, m, dim=0, clear=False)
                for h in T.Parallel(BH):
                    m[h] = T.max(m[h], m_prev[h])
                    alpha[h] = T.exp2((m_prev[h] - m[h]) * scale)
                for i, h in T.Parallel(BI, BH):
                    acc_s[i, h] = T.exp2((acc_s[i, h] - m[h]) * scale)
                T.reduce_sum(acc_s, block_sum, dim=0)
                for h in T.Parallel(BH):
                    denom[h] = denom[h] * T.exp2((m_prev[h] - m[h]) * scale) + block_sum[h]
                for d, h in T.Parallel(dim, BH):
                    acc_o[d, h] = acc_o[d, h] * alpha[h]
                if BH == 8:
                    for i, h in T.Parallel(BI, BH):
                        p_shared[h, i] = acc_s[i, h]
                else:
                    T.copy(acc_s, p_shared)
                T.gemm(kv_shared, p_shared, acc_o, transpose_A=True, transpose_B=BH == 8)
            for h in T.Parallel(BH):  # 1 / denom, and the natural-log lse
                alpha[h] = T.if_then_else(denom[h] > 0, 1.0 / denom[h], 0)
                block_sum[h] = T.if_then_else(denom[h] > 0, (T.log2(denom[h]) + m[h] * scale) / LOG2E,
                                              -T.infinity(f32))
            if splits == 1:
                for d, h in T.Parallel(dim, BH):
                    Out[q_i, h0 + h, d] = acc_o[d, h] * alpha[h]
                T.copy(block_sum, Lse[q_i, h0:h0 + BH])
            else:
                for d, h in T.Parallel(dim, BH):
                    Out[q_i, sp, h0 + h, d] = acc_o[d, h] * alpha[h]
                T.copy(block_sum, Lse[q_i, sp, h0:h0 + BH])

    return main


def sparse_mla_combine(heads: int = 16, dim: int = 512, splits: int = 2, threads: int = 128):
    """Builder: OPart fp32 [t, splits, heads, dim], LsePart fp32 [t, splits, heads] (natural log)
    -> Out bf16 [t, heads, dim], Lse fp32 [t, heads]: each split weighted by exp(lse - max lse)."""
    t = T.dynamic("t")
    f32 = "float32"

    @T.prim_func
    def main(OPart: T.Tensor([t, splits, heads, dim], f32), LsePart: T.Tensor([t, splits, heads], f32),
             Out: T.Tensor([t, heads, dim], "bfloat16"), Lse: T.Tensor([t, heads], f32)):
        with T.Kernel(t, heads, threads=threads) as (q_i, h):
            acc = T.alloc_fragment([dim], f32)
            top, total, weight = (T.alloc_var(f32) for _ in range(3))
            top = -T.infinity(f32)
            total = 0.0
            for sp in T.serial(splits):
                top = T.max(top, LsePart[q_i, sp, h])
            T.fill(acc, 0)
            for sp in T.serial(splits):  # an empty split (lse = -inf) weighs 0
                weight = T.if_then_else(LsePart[q_i, sp, h] > -T.infinity(f32), T.exp(LsePart[q_i, sp, h] - top), 0)
                total = total + weight
                for d in T.Parallel(dim):
                    acc[d] = acc[d] + weight * OPart[q_i, sp, h, d]
            for d in T.Parallel(dim):
                Out[q_i, h, d] = T.if_then_else(total > 0, acc[d] / total, 0)
            Lse[q_i, h] = T.if_then_else(total > 0, top + T.log(total), -T.infinity(f32))

    return main


NARROW_BLOCK_H = (8, 16, 32)  # heads per narrow CTA: the wgmma N values its schedules compile and test
BUILDERS = {"simple": sparse_mla_fwd, "pipelined": sparse_mla_fwd_pipelined, "narrow": sparse_mla_fwd_narrow}

# Schedules a GPU search may pick from (`experiments/sparse_mla.py`), per family; the first of a
# family is its default. The narrow family also gets a top-k split from `sparse_mla_knobs`.
CANDIDATES = {
    "wide": ({"kernel": "pipelined"}, {"kernel": "simple", "block_I": 64, "num_stages": 2, "threads": 256},
             {"kernel": "pipelined", "regs": (232, 160, 96)}),
    # Three stages of 64 gathered rows (216 KiB) plus q do not fit: the narrow kernel keeps two.
    "narrow": ({"kernel": "narrow", "block_I": 64, "num_stages": 2, "threads": 256},
               {"kernel": "narrow", "block_I": 64, "num_stages": 2, "threads": 128}),
}


def schedule_family(heads: int, t: int, sms: int = 132) -> str:
    """"wide" (64 heads per CTA) when heads fill whole wgmma M tiles and the queries fill half the SMs;
    else "narrow" (heads as the wgmma N, top-k split over CTAs)."""
    return "wide" if heads % 64 == 0 and t * heads // 64 >= sms // 2 else "narrow"


@functools.lru_cache(maxsize=None)
def sparse_mla_knobs(heads: int, topk: int, t: int = 4096, sms: int = 132, choice: int = 0,
                     family: str | None = None) -> dict:
    """Schedule for a shape. 64 heads fill one wgmma M (q 72 KiB + two stages of 64 gathered rows,
    2 x 72 KiB, fit the 227 KiB of shared memory). The narrow kernel takes up to 32 heads per CTA
    and splits the top-k list over CTAs (a power of two, >= 4 kv tiles each) while fewer than
    about two CTAs per SM would run."""
    family = family or schedule_family(heads, t, sms)
    knobs = dict(CANDIDATES[family][choice])
    if family == "narrow":
        knobs["block_H"] = math.gcd(heads, 32)
        if knobs["block_H"] < 32:  # two warpgroups would split 8 or 16 heads into tiles too narrow for
            knobs["threads"] = 128  # wgmma's B layout; with 32 heads one warpgroup spills O^T [512, 32]
        ctas, tiles, splits = t * heads // knobs["block_H"], -(-topk // knobs["block_I"]), 1
        while ctas * splits < 2 * sms and tiles // (splits * 2) >= 4:
            splits *= 2
        knobs["splits"] = splits
    return knobs


def build(heads: int, d_qk: int, dim_v: int, topk: int, scale: float, params: dict):
    """(forward kernel, combine kernel or None) for a schedule from `sparse_mla_knobs`."""
    params = dict(params)
    builder = BUILDERS[params.pop("kernel")]
    if heads % params.get("block_H", 64):
        raise ValueError(f"heads={heads} is not a multiple of block_H={params.get('block_H', 64)}")
    block_H, threads = params.get("block_H", 16), params.get("threads", 128)
    if builder is sparse_mla_fwd_narrow and (block_H not in NARROW_BLOCK_H or threads != 128 and block_H != 32):
        raise ValueError(f"narrow kernel: block_H={block_H}, threads={threads}; it takes block_H 8 or 16 "
                         f"with 128 threads, 32 with 128 or 256")
    kernel = compile_kernel(builder, heads, dim_v, d_qk - dim_v, topk, scale, pass_configs=PASS_CONFIGS, **params)
    splits = params.get("splits", 1)
    return kernel, (compile_kernel(sparse_mla_combine, heads, dim_v, splits) if splits > 1 else None)


def validate(q, kv, indices, dim_v: int = 512) -> None:
    import torch

    if q.dim() != 3 or q.dtype != torch.bfloat16:
        raise ValueError(f"q must be bf16 [t, heads, d_qk], got {q.dtype} {tuple(q.shape)}")
    t, heads, d_qk = q.shape
    if kv.dtype != torch.bfloat16 or kv.dim() != 3 or kv.shape[1:] != (1, d_qk):
        raise ValueError(f"kv must be bf16 [s, 1, {d_qk}], got {kv.dtype} {tuple(kv.shape)}")
    if indices.dtype != torch.int32 or indices.dim() != 3 or indices.shape[:2] != (t, 1):
        raise ValueError(f"indices must be int32 [{t}, 1, topk], got {indices.dtype} {tuple(indices.shape)}")
    if not 0 < dim_v < d_qk:
        raise ValueError(f"d_v={dim_v} must lie inside d_qk={d_qk}")
    if heads <= 0 or heads % HEADS_MULTIPLE:
        raise ValueError(f"heads={heads} is not supported: sparse MLA takes {SUPPORTED_HEADS} query heads")


def sparse_mla(q, kv, indices, sm_scale: float | None = None, dim_v: int = 512, out=None, lse=None,
               choice: int = 0, family: str | None = None, **knobs):
    """(out bf16 [t, heads, dim_v], lse fp32 [t, heads]) of sparse MLA forward. `family`
    ("wide" or "narrow") and `choice` pick a CANDIDATES schedule; keyword knobs override values."""
    import torch

    validate(q, kv, indices, dim_v)
    t, heads, d_qk = q.shape
    topk = indices.shape[2]
    scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(d_qk)
    params = {**sparse_mla_knobs(heads, topk, t, sm_count(q.device), choice, family), **knobs}
    kernel, combine = build(heads, d_qk, dim_v, topk, scale, params)
    out = torch.empty(t, heads, dim_v, dtype=q.dtype, device=q.device) if out is None else out
    lse = torch.empty(t, heads, dtype=torch.float32, device=q.device) if lse is None else lse
    args = (q.contiguous(), kv.contiguous(), indices.contiguous())
    if combine is None:
        kernel(*args, out, lse)
        return out, lse
    splits = params["splits"]
    o_part = torch.empty(t, splits, heads, dim_v, dtype=torch.float32, device=q.device)
    lse_part = torch.empty(t, splits, heads, dtype=torch.float32, device=q.device)
    kernel(*args, o_part, lse_part)
    combine(o_part, lse_part, out, lse)
    return out, lse
