"""MLA decode with FlashMLA's own schedule (its "steps 1-14"), for the same plan and layouts as
kernels/mla_decode.py: a candidate under measurement for 64-row tiles (h_q * s_q a multiple of 64).

Two warpgroups and no producer: each issues TMA loads itself, 64 columns a barrier, the moment
the buffer it loads into is free. A piece's K/V blocks go in pairs (K0, K1) and
  * warpgroup 0 scores K0 (S0 = Q K0^T, the rope part from Q in registers), takes the running
    max, turns S0 into P0 and adds P0 V0 to the left half of O; warpgroup 1 then scores K1
    against the max after K0 and adds P1 V1 to the right half, then P0 V0 (P0 rescaled by
    warpgroup 0 to the max after K1); warpgroup 0 adds P1 V1 to the left half;
  * the scores of the next pair are issued before the last O update of this one finishes
    ("rotated"), and each 64-column slice of K is reloaded as soon as its last reader is done,
    so TMA traffic overlaps the GEMMs of both warpgroups.
A pair without its second block (an odd block count) skips K1's loads and GEMMs (P1 = 0). The
last block's keys past the length (and the causal limit for s_q = 2) are masked in S and their
(possibly NaN) cache rows zeroed by the warpgroup that scored them, before either multiplies P by V.
"""

from kernels.mla_common import D_PE, D_QK, D_V, LOG2E, PAGE, PLAN_FIELDS, last_block_masks, padded_rows_io


def mla_decode_pingpong(h_q, s_q, dtype, sm_scale):
    import tilelang.language as T

    rows, accum, block_H, block_N, half = s_q * h_q, "float32", 64, PAGE, D_V // 2
    assert rows % block_H == 0, "64-row tiles only"
    tiles = half // D_PE  # 64-column slices of each half of K, one barrier each
    scale = sm_scale * LOG2E
    _, store = padded_rows_io(block_H, rows, h_q, scale)
    mask_scores, _ = last_block_masks(block_H, block_N, h_q, s_q)
    batch, num_tokens, max_pages, pieces, slots = T.dynamic("batch num_tokens max_pages pieces slots")

    @T.macro
    def load(KV, dst, bars, tok, c0):  # one half (or the rope part) of a K/V block, a barrier per slice
        for j in T.unroll(dst.shape[1] // D_PE):
            T.tma_copy(KV[tok:tok + block_N, c0 + j * D_PE:c0 + (j + 1) * D_PE], dst[:, j * D_PE:(j + 1) * D_PE],
                       barrier=bars[j])
            T.barrier_arrive(bars[j])

    @T.macro
    def score(Q_l, Q_r, Qpe, K_l, K_r, K_pe, bl, br, bpe, parity, S):  # S = Q K^T, slice by slice as it lands
        for j in T.unroll(tiles):
            T.barrier_wait(bl[j], parity)
            T.wgmma_gemm(Q_l[:, j * D_PE:(j + 1) * D_PE], K_l[:, j * D_PE:(j + 1) * D_PE], S, transpose_B=True,
                         clear_accum=(j == 0))
        for j in T.unroll(tiles):
            T.barrier_wait(br[j], parity)
            T.wgmma_gemm(Q_r[:, j * D_PE:(j + 1) * D_PE], K_r[:, j * D_PE:(j + 1) * D_PE], S, transpose_B=True)
        T.barrier_wait(bpe[0], parity)
        T.wgmma_gemm(Qpe, K_pe, S, transpose_B=True)

    @T.macro
    def mask_last(S, K_l, K_r, blk, seqlen, r0):  # length and causal limits; NaN rows of the cache zeroed
        mask_scores(S, blk * block_N, seqlen, r0)
        for j, d in T.Parallel(block_N, half):  # this block's K/V lives in two halves here
            K_l[j, d] = T.if_then_else(blk * block_N + j < seqlen, K_l[j, d], 0)
            K_r[j, d] = T.if_then_else(blk * block_N + j < seqlen, K_r[j, d], 0)
        T.fence_proxy_async()

    @T.prim_func
    def split_kv_pingpong(
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
        with T.Kernel(rows // block_H, pieces, threads=256) as (g, p):
            Q_l = T.alloc_shared([block_H, half], dtype)
            Q_r = T.alloc_shared([block_H, half], dtype)
            Q_pe = T.alloc_shared([block_H, D_PE], dtype)  # then P1, once both warpgroups hold Q_pe in registers
            K0_l = T.alloc_shared([block_N, half], dtype)
            K0_r = T.alloc_shared([block_N, half], dtype)
            K0_pe = T.alloc_shared([block_N, D_PE], dtype)
            K1_l = T.alloc_shared([block_N, half], dtype)
            K1_r = T.alloc_shared([block_N, half], dtype)
            K1_pe = T.alloc_shared([block_N, D_PE], dtype)
            P0_s = T.alloc_shared([block_H, block_N], dtype)
            m_s = T.alloc_shared([block_H], accum)  # the running row max
            scale0_s = T.alloc_shared([block_H], accum)
            scale1_s = T.alloc_shared([block_H], accum)
            l_s = T.alloc_shared([block_H], accum)
            Qpe_0 = T.alloc_fragment([block_H, D_PE], dtype)
            Qpe_1 = T.alloc_fragment([block_H, D_PE], dtype)
            S0 = T.alloc_fragment([block_H, block_N], accum)
            S1 = T.alloc_fragment([block_H, block_N], accum)
            P0 = T.alloc_fragment([block_H, block_N], dtype)
            P1 = T.alloc_fragment([block_H, block_N], dtype)
            P0_scaled = T.alloc_fragment([block_H, block_N], dtype)
            acc_l = T.alloc_fragment([block_H, half], accum)
            acc_r = T.alloc_fragment([block_H, half], accum)
            m0 = T.alloc_fragment([block_H], accum)
            m1 = T.alloc_fragment([block_H], accum)
            m_prev0 = T.alloc_fragment([block_H], accum)
            m_prev1 = T.alloc_fragment([block_H], accum)
            sum0 = T.alloc_fragment([block_H], accum)
            sum1 = T.alloc_fragment([block_H], accum)
            l0 = T.alloc_fragment([block_H], accum)
            l1 = T.alloc_fragment([block_H], accum)
            q_ready = T.alloc_barrier(arrive_count=256)
            k0l = T.alloc_barrier(arrive_count=[128] * tiles)
            k0r = T.alloc_barrier(arrive_count=[128] * tiles)
            k0pe = T.alloc_barrier(arrive_count=[128])
            k1l = T.alloc_barrier(arrive_count=[128] * tiles)
            k1r = T.alloc_barrier(arrive_count=[128] * tiles)
            k1pe = T.alloc_barrier(arrive_count=[128])
            max0_ready = T.alloc_barrier(arrive_count=128)
            scale1_ready = T.alloc_barrier(arrive_count=128)
            p0_ready = T.alloc_barrier(arrive_count=128)
            p1_ready = T.alloc_barrier(arrive_count=128)
            lse0 = T.alloc_barrier(arrive_count=128)
            lse1 = T.alloc_barrier(arrive_count=128)

            b, lo, r0 = plan[p, 0], plan[p, 1], g * block_H
            n, seqlen = plan[p, 2] - plan[p, 1], cache_seqlens[b]
            last, whole, pairs = T.ceildiv(seqlen, block_N) - 1, seq_slot[b + 1] - seq_slot[b] == 1, T.ceildiv(n, 2)
            tx = T.get_thread_binding()
            T.tma_copy(Q[b, r0:r0 + block_H, 0:half], Q_l, barrier=q_ready)
            T.tma_copy(Q[b, r0:r0 + block_H, half:D_V], Q_r, barrier=q_ready)
            T.tma_copy(Q[b, r0:r0 + block_H, D_V:D_QK], Q_pe, barrier=q_ready)
            # A finite floor (not -inf) keeps exp2(m_prev - m) finite while a row has seen only
            # masked keys; masked scores stay -inf and contribute exactly zero.
            T.fill(m_s, -1e30)
            T.barrier_arrive(q_ready)
            T.barrier_wait(q_ready, 0)

            if tx < 128:  # warpgroup 0: K0's scores, the left half of O
                T.copy(Q_pe, Qpe_0)
                T.fill(acc_l, 0)
                T.fill(l0, 0)
                if n > 1:
                    load(KV, K1_l, k1l, block_table[b, lo + 1] * PAGE, 0)
                    load(KV, K1_pe, k1pe, block_table[b, lo + 1] * PAGE, D_V)
                score(Q_l, Q_r, Qpe_0, K0_l, K0_r, K0_pe, k0l, k0r, k0pe, 0, S0)
                T.wait_wgmma(0)
                for i in T.serial(pairs):
                    if lo + 2 * i == last:
                        mask_last(S0, K0_l, K0_r, lo + 2 * i, seqlen, r0)
                    T.copy(m_s, m_prev0)
                    T.copy(m_s, m0)
                    T.reduce_max(S0, m0, dim=1, clear=False)
                    T.copy(m0, m_s)
                    for r, j in T.Parallel(block_H, block_N):
                        S0[r, j] = T.exp2(S0[r, j] * scale - m0[r] * scale)
                    for r in T.Parallel(block_H):
                        scale0_s[r] = T.exp2((m_prev0[r] - m0[r]) * scale)
                    T.reduce_sum(S0, sum0, dim=1)
                    T.copy(S0, P0)
                    for r, d in T.Parallel(block_H, half):
                        acc_l[r, d] *= scale0_s[r]
                    for r in T.Parallel(block_H):
                        l0[r] = l0[r] * scale0_s[r] + sum0[r]
                    T.barrier_arrive(max0_ready)
                    T.wgmma_gemm(P0, K0_l, acc_l)  # O_l += P0 V0_l
                    T.wait_wgmma(0)
                    if 2 * i + 2 < n:  # K0_l is free: the next pair's first block
                        load(KV, K0_l, k0l, block_table[b, lo + 2 * i + 2] * PAGE, 0)
                    T.barrier_wait(scale1_ready, i & 1)
                    for r, j in T.Parallel(block_H, block_N):
                        P0_scaled[r, j] = S0[r, j] * scale1_s[r]  # P0 against the max after K1
                    T.copy(P0_scaled, P0_s)
                    T.fence_proxy_async()
                    T.barrier_arrive(p0_ready)
                    for r, d in T.Parallel(block_H, half):
                        acc_l[r, d] *= scale1_s[r]
                    for r in T.Parallel(block_H):
                        l0[r] *= scale1_s[r]
                    T.barrier_wait(p1_ready, i & 1)
                    if 2 * i + 1 < n:
                        T.wgmma_gemm(Q_pe, K1_l, acc_l)  # O_l += P1 V1_l (P1 lives where Q_pe was)
                    if 2 * i + 2 < n:  # the next pair's K0 scores, while P1 V1_l runs
                        for j in T.unroll(tiles):
                            T.barrier_wait(k0l[j], (i + 1) & 1)
                            T.wgmma_gemm(Q_l[:, j * D_PE:(j + 1) * D_PE], K0_l[:, j * D_PE:(j + 1) * D_PE], S0,
                                         transpose_B=True, clear_accum=(j == 0))
                        T.wait_wgmma(tiles)  # P1 V1_l is done: K1_l and K1_pe are free
                        if 2 * i + 3 < n:
                            load(KV, K1_l, k1l, block_table[b, lo + 2 * i + 3] * PAGE, 0)
                            load(KV, K1_pe, k1pe, block_table[b, lo + 2 * i + 3] * PAGE, D_V)
                        for j in T.unroll(tiles):
                            T.barrier_wait(k0r[j], (i + 1) & 1)
                            T.wgmma_gemm(Q_r[:, j * D_PE:(j + 1) * D_PE], K0_r[:, j * D_PE:(j + 1) * D_PE], S0,
                                         transpose_B=True)
                        T.barrier_wait(k0pe[0], (i + 1) & 1)
                        T.wgmma_gemm(Qpe_0, K0_pe, S0, transpose_B=True)
                    T.wait_wgmma(0)
                T.copy(l0, l_s)
                T.barrier_arrive(lse0)
                T.barrier_wait(lse1, 0)
                T.copy(l_s, l0)
                T.copy(m_s, m0)
                for r, d in T.Parallel(block_H, half):
                    acc_l[r, d] /= T.max(l0[r], 1e-30)
                store(acc_l, half, 0, l0, m0, b, r0, plan[p, 3], whole, O, LSE, O_part, LSE_part, True)
            else:  # warpgroup 1: K1's scores, the right half of O
                T.copy(Q_pe, Qpe_1)
                T.fill(acc_r, 0)
                T.fill(l1, 0)
                load(KV, K0_l, k0l, block_table[b, lo] * PAGE, 0)
                load(KV, K0_r, k0r, block_table[b, lo] * PAGE, half)
                load(KV, K0_pe, k0pe, block_table[b, lo] * PAGE, D_V)
                if n > 1:
                    load(KV, K1_r, k1r, block_table[b, lo + 1] * PAGE, half)
                    score(Q_l, Q_r, Qpe_1, K1_l, K1_r, K1_pe, k1l, k1r, k1pe, 0, S1)
                T.wait_wgmma(0)
                for i in T.serial(pairs):
                    if 2 * i + 1 < n:
                        if lo + 2 * i + 1 == last:
                            mask_last(S1, K1_l, K1_r, lo + 2 * i + 1, seqlen, r0)
                    else:  # the pair's second block lies past the piece
                        T.fill(S1, -T.infinity(accum))
                    T.barrier_wait(max0_ready, i & 1)
                    T.copy(m_s, m_prev1)
                    T.copy(m_s, m1)
                    T.reduce_max(S1, m1, dim=1, clear=False)
                    T.copy(m1, m_s)
                    for r in T.Parallel(block_H):
                        scale1_s[r] = T.exp2((m_prev1[r] - m1[r]) * scale)
                    for r, j in T.Parallel(block_H, block_N):
                        S1[r, j] = T.exp2(S1[r, j] * scale - m1[r] * scale)
                    T.reduce_sum(S1, sum1, dim=1)
                    for r, d in T.Parallel(block_H, half):
                        acc_r[r, d] *= scale0_s[r] * scale1_s[r]
                    for r in T.Parallel(block_H):
                        l1[r] = l1[r] * scale0_s[r] * scale1_s[r] + sum1[r]
                    T.barrier_arrive(scale1_ready)
                    T.copy(S1, P1)
                    T.copy(P1, Q_pe)
                    T.fence_proxy_async()
                    if 2 * i + 1 < n:
                        T.wgmma_gemm(P1, K1_r, acc_r)  # O_r += P1 V1_r
                    T.barrier_arrive(p1_ready)
                    T.barrier_wait(p0_ready, i & 1)
                    T.wgmma_gemm(P0_s, K0_r, acc_r)  # O_r += P0 V0_r
                    if 2 * i + 2 < n:
                        T.wait_wgmma(1)  # P1 V1_r is done: K1_r is free
                        if 2 * i + 3 < n:
                            load(KV, K1_r, k1r, block_table[b, lo + 2 * i + 3] * PAGE, half)
                        T.wait_wgmma(0)  # P0 V0_r is done: K0_r and K0_pe are free
                        load(KV, K0_r, k0r, block_table[b, lo + 2 * i + 2] * PAGE, half)
                        load(KV, K0_pe, k0pe, block_table[b, lo + 2 * i + 2] * PAGE, D_V)
                        if 2 * i + 3 < n:  # the next pair's K1 scores
                            score(Q_l, Q_r, Qpe_1, K1_l, K1_r, K1_pe, k1l, k1r, k1pe, (i + 1) & 1, S1)
                    T.wait_wgmma(0)
                T.barrier_wait(lse0, 0)
                T.copy(l_s, sum1)
                for r in T.Parallel(block_H):
                    l1[r] += sum1[r]  # the row sums of both warpgroups' keys
                T.copy(l1, l_s)
                T.barrier_arrive(lse1)
                T.copy(m_s, m1)
                for r, d in T.Parallel(block_H, half):
                    acc_r[r, d] /= T.max(l1[r], 1e-30)
                store(acc_r, half, half, l1, m1, b, r0, plan[p, 3], whole, O, LSE, O_part, LSE_part, False)

    return split_kv_pingpong
