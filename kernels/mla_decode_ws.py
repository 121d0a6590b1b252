"""MLA decode, warp-specialized (FlashMLA's schedule), for the same plan and layouts as
kernels/mla_decode.py: a candidate under measurement, not yet in the schedule search.

Three warpgroups per CTA, one (row tile, piece of a sequence) each, as in mla_decode_split_kv:
  * a producer copies each 64-token K/V block of the piece (through the block table) into one of
    `stages` shared buffers with cp.async, and signals `ready`;
  * consumer 0 computes the whole score tile S = Q K^T (64 rows x block_N keys over all 576
    columns: wgmma N = block_N, where the split kernel gives each warpgroup half of it), the
    online softmax, and the left half of O (columns 0..255) from P in shared memory;
  * consumer 1 rescales and accumulates the right half of O (256..511) from the same P, so
    consumer 0 computes the next block's scores while consumer 1 still multiplies by V.
A buffer is released when both consumers are done with it (`free`); P and its rescale factors
are shared through `p_ready` / `p_free`. Rows past s_q * h_q are zeros and never written; the
last block's keys past the length are masked in S and their (possibly NaN) cache rows zeroed
before either consumer multiplies P by V.
"""

from kernels.mla_common import D_PE, D_QK, D_V, LOG2E, PAGE, PLAN_FIELDS, last_block_masks, online_softmax, padded_rows_io


def mla_decode_ws(h_q, s_q, dtype, sm_scale, block_N=64, stages=2):
    import tilelang.language as T

    rows, accum, block_H, half = s_q * h_q, "float32", 64, D_V // 2
    scale = sm_scale * LOG2E
    softmax = online_softmax(block_H, block_N, scale)
    load_q, store = padded_rows_io(block_H, rows, h_q, scale)
    mask_scores, zero_rows = last_block_masks(block_H, block_N, h_q, s_q)
    batch, num_tokens, max_pages, pieces, slots = T.dynamic("batch num_tokens max_pages pieces slots")

    @T.prim_func
    def split_kv_ws(
        Q: T.Tensor([batch, rows, D_QK], dtype),
        KV: T.Tensor([num_tokens, D_QK], dtype),
        block_table: T.Tensor([batch, max_pages], "int32"),
        cache_seqlens: T.Tensor([batch], "int32"),
        plan: T.Tensor([pieces, PLAN_FIELDS], "int32"),
        seq_slot: T.Tensor([batch + 1], "int32"),
        O: T.Tensor([batch, rows, D_V], dtype),
        LSE: T.Tensor([batch, h_q, s_q], accum),
        O_part: T.Tensor([slots, rows, D_V], accum),
        LSE_part: T.Tensor([slots, rows], accum),
    ):
        with T.Kernel(T.ceildiv(rows, block_H), pieces, threads=384) as (g, p):
            Q_s = T.alloc_shared([block_H, D_V], dtype)
            Qpe_s = T.alloc_shared([block_H, D_PE], dtype)
            KV_s = T.alloc_shared([stages, block_N, D_V], dtype)
            Kpe_s = T.alloc_shared([stages, block_N, D_PE], dtype)
            P_s = T.alloc_shared([block_H, block_N], dtype)
            alpha_s = T.alloc_shared([block_H], accum)
            l_s = T.alloc_shared([block_H], accum)
            S = T.alloc_fragment([block_H, block_N], accum)
            acc_l = T.alloc_fragment([block_H, half], accum)
            acc_r = T.alloc_fragment([block_H, half], accum)
            m = T.alloc_fragment([block_H], accum)
            m_prev = T.alloc_fragment([block_H], accum)
            alpha = T.alloc_fragment([block_H], accum)
            row_sum = T.alloc_fragment([block_H], accum)
            l = T.alloc_fragment([block_H], accum)
            q_ready = T.alloc_barrier(arrive_count=384)
            ready = T.alloc_barrier(arrive_count=[128] * stages)
            free = T.alloc_barrier(arrive_count=[256] * stages)
            p_ready = T.alloc_barrier(arrive_count=256)
            p_free = T.alloc_barrier(arrive_count=256)
            l_ready = T.alloc_barrier(arrive_count=256)

            b, lo, r0 = plan[p, 0], plan[p, 1], g * block_H
            n, seqlen = plan[p, 2] - plan[p, 1], cache_seqlens[b]
            last, whole = T.ceildiv(seqlen, block_N) - 1, seq_slot[b + 1] - seq_slot[b] == 1
            tx = T.get_thread_binding()
            load_q(Q, Q_s, Qpe_s, b, r0)  # zeros past the last row
            T.fence_proxy_async()
            T.barrier_arrive(q_ready)

            if tx < 128:  # consumer 0: scores, softmax, left half of O
                T.set_max_nreg(240, 1)
                T.fill(acc_l, 0)
                T.fill(l, 0)
                T.fill(m, -1e30)
                T.barrier_wait(q_ready, 0)
                for i in T.serial(T.ceildiv(n, stages)):
                    for st in T.unroll(stages):
                        k = i * stages + st
                        if k < n:
                            T.barrier_wait(ready[st], i & 1)
                            T.clear(S)
                            T.wgmma_gemm(Q_s[:, 0:half], KV_s[st, :, 0:half], S, transpose_B=True)
                            T.wgmma_gemm(Q_s[:, half:D_V], KV_s[st, :, half:D_V], S, transpose_B=True)
                            T.wgmma_gemm(Qpe_s, Kpe_s[st, :, :], S, transpose_B=True)
                            T.wait_wgmma(0)
                            if lo + k == last:  # length and causal limits; NaN rows of the cache zeroed
                                mask_scores(S, (lo + k) * block_N, seqlen, r0)
                                zero_rows(KV_s, st, (lo + k) * block_N, seqlen)
                                T.fence_proxy_async()
                            if k > 0:  # consumer 1 is done with the previous P
                                T.barrier_arrive(p_free)
                                T.barrier_wait(p_free, (k & 1) ^ 1)
                            softmax(S, m, m_prev, alpha, row_sum, l)
                            for r, d in T.Parallel(block_H, half):
                                acc_l[r, d] *= alpha[r]
                            T.copy(alpha, alpha_s)
                            T.copy(S, P_s)
                            T.gemm(P_s, KV_s[st, :, 0:half], acc_l)
                            T.barrier_arrive(p_ready)
                            T.barrier_arrive(free[st])
                T.copy(l, l_s)
                T.barrier_arrive(l_ready)
                for r, d in T.Parallel(block_H, half):
                    acc_l[r, d] /= T.max(l[r], 1e-30)
                store(acc_l, half, 0, l, m, b, r0, plan[p, 3], whole, O, LSE, O_part, LSE_part, True)
            elif tx < 256:  # consumer 1: right half of O
                T.set_max_nreg(168, 1)
                T.fill(acc_r, 0)
                for i in T.serial(T.ceildiv(n, stages)):
                    for st in T.unroll(stages):
                        k = i * stages + st
                        if k < n:
                            T.barrier_arrive(p_ready)
                            T.barrier_wait(p_ready, k & 1)
                            for r, d in T.Parallel(block_H, half):
                                acc_r[r, d] *= alpha_s[r]
                            T.gemm(P_s, KV_s[st, :, half:D_V], acc_r)
                            T.barrier_arrive(free[st])
                            if k < n - 1:
                                T.barrier_arrive(p_free)
                T.barrier_arrive(l_ready)
                T.barrier_wait(l_ready, 0)
                for r, d in T.Parallel(block_H, half):
                    acc_r[r, d] /= T.max(l_s[r], 1e-30)
                store(acc_r, half, half, l_s, m, b, r0, plan[p, 3], whole, O, LSE, O_part, LSE_part, False)
            else:  # producer: K/V blocks through the block table, 16 bytes a copy
                T.set_max_nreg(80, 0)
                t = tx - 256
                for i in T.serial(T.ceildiv(n, stages)):
                    for st in T.unroll(stages):
                        k = i * stages + st
                        if k < n:
                            T.barrier_wait(free[st], (i & 1) ^ 1)
                            tok = block_table[b, (lo + k) * block_N // PAGE] * PAGE + (lo + k) * block_N % PAGE
                            for rr in T.serial(block_N // 16):
                                j = rr * 16 + t // 8
                                for u in T.serial(D_V // 64):
                                    T.ptx_cp_async(T.access_ptr(KV_s[st, j, 64 * u + t % 8 * 8], "w", 8),
                                                   T.access_ptr(KV[tok + j, 64 * u + t % 8 * 8], "r", 8), 8)
                                T.ptx_cp_async(T.access_ptr(Kpe_s[st, j, t % 8 * 8], "w", 8),
                                               T.access_ptr(KV[tok + j, D_V + t % 8 * 8], "r", 8), 8)
                            T.cp_async_barrier_noinc(ready[st])

    return split_kv_ws
