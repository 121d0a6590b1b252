"""MLA decode with FlashMLA's "seesaw" schedule, for the same plan and layouts as
kernels/mla_decode.py: a candidate under measurement for row tiles of 64 rows.

Three warpgroups per CTA, one (row tile, piece of a sequence) each, as in mla_decode_split_kv.
The piece's K/V blocks go in pairs; consumer w (0 or 1) owns block 2i + w of pair i and the
w-th half of the 512 output columns:
  * a producer copies each block (through the block table) into its shared buffer with
    cp.async: pair i uses buffers 2i and 2i + 1 modulo `stages`, so with four 32-key buffers the
    next pair loads while this one is computed;
  * each consumer computes the scores of its own block, S_w = Q K_w^T (64 rows x block_N over
    all 576 columns), and the two swap row maxima through shared memory, so both hold one
    running max; each turns its S_w into P_w and leaves it in shared memory;
  * each adds P_0 V_0 and P_1 V_1 to its half of O: the two score GEMMs and softmaxes run side
    by side, and one consumer's softmax overlaps the other's GEMMs.
The row sums are summed across the consumers at the end. A pair whose second block lies past the
piece has an empty second half (no loads, P_1 = 0, its GEMMs skipped). The last block's keys past
the length (and the causal limit for s_q = 2) are masked in S, and their (possibly NaN) cache
rows zeroed before either consumer multiplies P by V.
"""

from kernels.mla_common import D_PE, D_QK, D_V, LOG2E, PAGE, PLAN_FIELDS, last_block_masks, padded_rows_io


def mla_decode_seesaw(h_q, s_q, dtype, sm_scale, block_N=64, stages=2):
    import tilelang.language as T

    assert stages % 2 == 0 and PAGE % block_N == 0 and block_N <= D_PE
    rows, accum, block_H, half = s_q * h_q, "float32", 64, D_V // 2
    scale = sm_scale * LOG2E
    _, store = padded_rows_io(block_H, rows, h_q, scale)
    mask_scores, zero_rows = last_block_masks(block_H, block_N, h_q, s_q)
    batch, num_tokens, max_pages, pieces, slots = T.dynamic("batch num_tokens max_pages pieces slots")
    tail = block_N == D_PE  # P_w fits where its block's rope keys were (all the shared memory is used)
    p0 = D_V if tail else 0  # P_w's first column in its buffer

    @T.macro
    def consumer(w, S, acc, m, m_prev, peer, l, Q_s, KV_s, P_s, max_s, sum_s, q_ready, ready, free, stats, p_ready,
                 b, lo, r0, n, seqlen, last, whole, pairs, slot, O, LSE, O_part, LSE_part):
        T.fill(acc, 0)
        T.fill(l, 0)
        # A finite floor (not -inf) keeps exp2(m_prev - m) finite while a row has seen only
        # masked keys; masked scores stay -inf and contribute exactly zero.
        T.fill(m, -1e30)
        T.barrier_wait(q_ready, 0)
        for i in T.serial(pairs):
            k, st, other = 2 * i + w, (2 * i + w) % stages, (2 * i + 1 - w) % stages
            mine, peers = (st, other) if tail else (w, 1 - w)  # the P tiles' buffers
            T.copy(m, m_prev)
            if k < n:  # S_w = Q K_w^T over the latent and rope columns
                T.barrier_wait(ready[st], (k // stages) & 1)
                T.clear(S)
                T.wgmma_gemm(Q_s[:, 0:half], KV_s[st, :, 0:half], S, transpose_B=True)
                T.wgmma_gemm(Q_s[:, half:D_V], KV_s[st, :, half:D_V], S, transpose_B=True)
                T.wgmma_gemm(Q_s[:, D_V:D_QK], KV_s[st, :, D_V:D_QK], S, transpose_B=True)
                T.wait_wgmma(0)
                if lo + k == last:  # length and causal limits; NaN rows of the cache zeroed
                    mask_scores(S, (lo + k) * block_N, seqlen, r0)
                    zero_rows(KV_s, st, (lo + k) * block_N, seqlen)
                T.reduce_max(S, m, dim=1, clear=False)
            else:  # the pair's second block lies past the piece
                T.fill(S, -T.infinity(accum))
            T.copy(m, max_s[w, :])  # one running max for both consumers
            T.barrier_arrive(stats[w])
            T.barrier_wait(stats[1 - w], i & 1)
            T.copy(max_s[1 - w, :], peer)
            for r in T.Parallel(block_H):
                m[r] = T.max(m[r], peer[r])
            for r, d in T.Parallel(block_H, half):
                acc[r, d] *= T.exp2((m_prev[r] - m[r]) * scale)
            for r, j in T.Parallel(block_H, block_N):
                S[r, j] = T.exp2(S[r, j] * scale - m[r] * scale)
            T.reduce_sum(S, peer, dim=1)
            for r in T.Parallel(block_H):
                l[r] = l[r] * T.exp2((m_prev[r] - m[r]) * scale) + peer[r]
            if k < n:
                T.copy(S, P_s[mine, :, p0:p0 + block_N])
            T.fence_proxy_async()
            T.barrier_arrive(p_ready[w])
            if k < n:  # O_w += P_w V_w (this consumer's half of the columns)
                T.wgmma_gemm(P_s[mine, :, p0:p0 + block_N], KV_s[st, :, w * half:(w + 1) * half], acc)
            T.barrier_wait(p_ready[1 - w], i & 1)
            if 2 * i + 1 - w < n:  # O_w += P_peer V_peer
                T.wgmma_gemm(P_s[peers, :, p0:p0 + block_N], KV_s[other, :, w * half:(w + 1) * half], acc)
            T.wait_wgmma(0)
            T.barrier_arrive(free[st])
            T.barrier_arrive(free[other])
        T.copy(l, sum_s[w, :])  # the row sums of both consumers' keys
        T.barrier_arrive(stats[w])
        T.barrier_wait(stats[1 - w], pairs & 1)
        T.copy(sum_s[1 - w, :], peer)
        for r in T.Parallel(block_H):
            l[r] += peer[r]
        for r, d in T.Parallel(block_H, half):
            acc[r, d] /= T.max(l[r], 1e-30)
        store(acc, half, w * half, l, m, b, r0, slot, whole, O, LSE, O_part, LSE_part, w == 0)

    @T.prim_func
    def split_kv_seesaw(
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
            Q_s = T.alloc_shared([block_H, D_QK], dtype)
            KV_s = T.alloc_shared([stages, block_N, D_QK], dtype)
            P_s = KV_s if tail else T.alloc_shared([2, block_H, block_N], dtype)
            max_s = T.alloc_shared([2, block_H], accum)
            sum_s = T.alloc_shared([2, block_H], accum)
            S_0 = T.alloc_fragment([block_H, block_N], accum)
            S_1 = T.alloc_fragment([block_H, block_N], accum)
            acc_0 = T.alloc_fragment([block_H, half], accum)
            acc_1 = T.alloc_fragment([block_H, half], accum)
            m_0 = T.alloc_fragment([block_H], accum)
            m_1 = T.alloc_fragment([block_H], accum)
            m_prev_0 = T.alloc_fragment([block_H], accum)
            m_prev_1 = T.alloc_fragment([block_H], accum)
            peer_0 = T.alloc_fragment([block_H], accum)
            peer_1 = T.alloc_fragment([block_H], accum)
            l_0 = T.alloc_fragment([block_H], accum)
            l_1 = T.alloc_fragment([block_H], accum)
            q_ready = T.alloc_barrier(arrive_count=384)
            ready = T.alloc_barrier(arrive_count=[128] * stages)
            free = T.alloc_barrier(arrive_count=[256] * stages)
            stats = T.alloc_barrier(arrive_count=[128, 128])
            p_ready = T.alloc_barrier(arrive_count=[128, 128])

            b, lo, r0 = plan[p, 0], plan[p, 1], g * block_H
            n, seqlen = plan[p, 2] - plan[p, 1], cache_seqlens[b]
            last, whole, pairs = T.ceildiv(seqlen, block_N) - 1, seq_slot[b + 1] - seq_slot[b] == 1, T.ceildiv(n, 2)
            tx = T.get_thread_binding()
            for r, d in T.Parallel(block_H, D_QK):  # zeros past the last row
                Q_s[r, d] = T.if_then_else(r0 + r < rows, Q[b, r0 + r, d], 0)
            T.fence_proxy_async()
            T.barrier_arrive(q_ready)

            if tx < 128:
                T.set_max_nreg(216, 1)
                consumer(0, S_0, acc_0, m_0, m_prev_0, peer_0, l_0, Q_s, KV_s, P_s, max_s, sum_s, q_ready, ready, free, stats, p_ready,
                         b, lo, r0, n, seqlen, last, whole, pairs, plan[p, 3], O, LSE, O_part, LSE_part)
            elif tx < 256:
                T.set_max_nreg(216, 1)
                consumer(1, S_1, acc_1, m_1, m_prev_1, peer_1, l_1, Q_s, KV_s, P_s, max_s, sum_s, q_ready, ready, free, stats, p_ready,
                         b, lo, r0, n, seqlen, last, whole, pairs, plan[p, 3], O, LSE, O_part, LSE_part)
            else:  # producer: K/V blocks through the block table, 16 bytes a copy
                T.set_max_nreg(72, 0)
                t = tx - 256
                for k in T.serial(n):
                    st = k % stages
                    T.barrier_wait(free[st], ((k // stages) & 1) ^ 1)
                    tok = block_table[b, (lo + k) * block_N // PAGE] * PAGE + (lo + k) * block_N % PAGE
                    for rr in T.serial(block_N // 16):
                        j = rr * 16 + t // 8
                        for u in T.serial(D_QK // 64):
                            T.ptx_cp_async(T.access_ptr(KV_s[st, j, 64 * u + t % 8 * 8], "w", 8),
                                           T.access_ptr(KV[tok + j, 64 * u + t % 8 * 8], "r", 8), 8)
                    T.cp_async_barrier_noinc(ready[st])

    return split_kv_seesaw
