"""The Triton FlashAttention forward kernel itself; imported only when a call needs it."""
import triton
import triton.language as tl

NO_SCORE = tl.constexpr(-1.0e30)  # finite running-max start: a fully masked key block never yields inf - inf


@triton.jit
def _step(acc, l_i, m_i, q, k_ptrs, v_ptrs, start, rm, rn, SK, offset, scale,
          MASKED: tl.constexpr, CAUSAL: tl.constexpr):
    """One key block of the online softmax: scores, new row max, rescale, accumulate P @ V."""
    keys = start + rn
    if MASKED:
        k = tl.load(k_ptrs, mask=keys[:, None] < SK, other=0.0)
        v = tl.load(v_ptrs, mask=keys[:, None] < SK, other=0.0)
    else:
        k = tl.load(k_ptrs)
        v = tl.load(v_ptrs)
    s = tl.dot(q, tl.trans(k)) * scale
    if MASKED:
        keep = keys[None, :] < SK
        if CAUSAL:
            keep = keep & (keys[None, :] <= rm[:, None] + offset)
        s = tl.where(keep, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.math.exp2(m_i - m_new)
    p = tl.math.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return acc, l_i, m_new


@triton.jit
def flash_fwd(q_ptr, k_ptr, v_ptr, o_ptr, sqb, sqs, sqh, skb, sks, skh, svb, svs, svh, sob, sos, soh,
              H, GROUPS, SQ, SK, scale, D: tl.constexpr, CAUSAL: tl.constexpr,
              BM: tl.constexpr, BN: tl.constexpr):
    """Program (m block, batch*head): BM query rows against all visible keys, BSHD strides."""
    pid_m = tl.program_id(0)
    if CAUSAL:  # bottom rows see the most keys: run them first to shorten the tail
        pid_m = tl.num_programs(0) - 1 - pid_m
    b = tl.program_id(1) // H
    h = tl.program_id(1) % H
    rm = pid_m * BM + tl.arange(0, BM)
    rn = tl.arange(0, BN)
    rd = tl.arange(0, D)
    q = tl.load(q_ptr + b * sqb + h * sqh + rm[:, None] * sqs + rd[None, :], mask=rm[:, None] < SQ, other=0.0)
    k_ptrs = k_ptr + b * skb + (h // GROUPS) * skh + rn[:, None] * sks + rd[None, :]
    v_ptrs = v_ptr + b * svb + (h // GROUPS) * svh + rn[:, None] * svs + rd[None, :]
    offset = SK - SQ  # bottom-right causal alignment: row r sees keys c <= r + offset
    if CAUSAL:
        hi = tl.maximum(tl.minimum(SK, (pid_m + 1) * BM + offset), 0)
        full_hi = tl.minimum(tl.maximum(pid_m * BM + offset + 1, 0), hi) // BN * BN
    else:
        hi = SK
        full_hi = SK // BN * BN
    m_i = tl.full([BM], NO_SCORE, tl.float32)
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, D], tl.float32)
    for start in range(0, full_hi, BN):  # blocks every row of this tile sees whole: no mask
        acc, l_i, m_i = _step(acc, l_i, m_i, q, k_ptrs + start * sks, v_ptrs + start * svs, start,
                              rm, rn, SK, offset, scale, False, CAUSAL)
    for start in range(full_hi, hi, BN):  # the diagonal and the ragged end
        acc, l_i, m_i = _step(acc, l_i, m_i, q, k_ptrs + start * sks, v_ptrs + start * svs, start,
                              rm, rn, SK, offset, scale, True, CAUSAL)
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]  # a row with no key has acc == 0: returns 0
    o_ptrs = o_ptr + b * sob + h * soh + rm[:, None] * sos + rd[None, :]
    tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=rm[:, None] < SQ)


def _configs():
    return [triton.Config({"BM": bm, "BN": bn}, num_warps=w, num_stages=s)
            for bm, bn, w, s in [(128, 128, 8, 2), (128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3),
                                 (64, 64, 4, 3), (128, 32, 4, 2)]]


flash_fwd_tuned = triton.autotune(configs=_configs(), key=["SQ", "SK", "D", "CAUSAL", "GROUPS"])(flash_fwd)
