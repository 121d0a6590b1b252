"""The merge of a cut sequence's pieces, wide: a candidate for kernels/mla_decode.py's combine.

The serial combine walks a sequence's pieces one at a time, three times (their max log2-LSE, the
sum of their weights, the weighted O rows), each step waiting on its own load: with one 64k
sequence cut into ~90 pieces that walk costs more than the attention. Here the threads split the
pieces for the two statistics (one pass each, then a reduction across threads) and the O rows
go `unroll` pieces a step, their loads issued together (an index past the last piece is clamped
and weighted zero, so the step has no branch).
"""

from kernels.mla_common import D_V, LN2


def mla_decode_combine_wide(h_q, s_q, dtype, threads=128, unroll=4):
    import tilelang.language as T

    rows, accum = s_q * h_q, "float32"
    batch, slots = T.dynamic("batch slots")

    @T.prim_func
    def combine_wide(
        seq_slot: T.Tensor([batch + 1], "int32"),
        O_part: T.Tensor([slots, rows, D_V], accum),
        LSE_part: T.Tensor([slots, rows], accum),
        O: T.Tensor([batch, rows, D_V], dtype),
        LSE: T.Tensor([batch, h_q, s_q], accum),
    ):
        with T.Kernel(rows, batch, threads=threads) as (r, b):
            part = T.alloc_fragment([threads], accum)  # each thread's share of the statistic
            lse_max = T.alloc_fragment([1], accum)
            total = T.alloc_fragment([1], accum)
            acc = T.alloc_fragment([D_V], accum)
            first, n = seq_slot[b], seq_slot[b + 1] - seq_slot[b]
            if n > 1:  # a sequence with one piece was written by the split kernel
                for t in T.Parallel(threads):
                    part[t] = -T.infinity(accum)
                    for k in T.serial(T.ceildiv(n, threads)):
                        s = k * threads + t
                        part[t] = T.max(part[t], T.if_then_else(s < n, LSE_part[first + T.min(s, n - 1), r],
                                                                -T.infinity(accum)))
                T.reduce_max(part, lse_max, dim=0)
                for t in T.Parallel(threads):
                    part[t] = 0
                    for k in T.serial(T.ceildiv(n, threads)):
                        s = k * threads + t
                        part[t] += T.if_then_else(s < n, T.exp2(LSE_part[first + T.min(s, n - 1), r] - lse_max[0]), 0)
                T.reduce_sum(part, total, dim=0)
                T.clear(acc)
                for k in T.serial(T.ceildiv(n, unroll)):
                    for u in T.unroll(unroll):
                        s = T.min(k * unroll + u, n - 1)
                        w = T.if_then_else(k * unroll + u < n, T.exp2(LSE_part[first + s, r] - lse_max[0]), 0)
                        for j in T.Parallel(D_V):
                            acc[j] += O_part[first + s, r, j] * w
                for j in T.Parallel(D_V):
                    O[b, r, j] = acc[j] / total[0]
                LSE[b, r % h_q, r // h_q] = (T.log2(total[0]) + lse_max[0]) * LN2

    return combine_wide
