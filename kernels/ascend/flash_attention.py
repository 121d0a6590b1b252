"""FlashAttention forward for Huawei Ascend in TileLang's Ascend dialect (tilelang.ascend.language).

Claim C2's kernel, written here: the in-tree Ascend backend of tilelang 0.1.15 (Ascend 950,
NPU arch dav-3510) rejects the GPU-dialect builder of kernels/flash_attention.py, so this one
says what the dialect expects. Q @ K^T and P @ V run on the Cube core from L1 into L0C;
`T.dual_copy` hands each half of a score tile to one of the two Vector cores, whose Unified
Buffer holds the online-softmax state; `T.SimtVF` regions do the element-wise work.

Layout: q, k, v, o [batch * heads * seqlen, dim] (BHSD, flattened), no mask (the dialect has
no per-Vector-core row index in auto-scheduled kernels, so causal masking is left out);
seqlen must be a multiple of block_M and block_N. Compiling it needs no NPU: the Ascend C
source is generated on any machine (tests/test_ascend_compile.py); a binary needs CANN's
`bisheng`; running it needs an Ascend 950 with torch_npu (`reference_check` below).
"""
# No `from __future__ import annotations`: TileLang evaluates the prim_func annotations eagerly.

import math

ASCEND_950 = {"kind": "ascend", "mcpu": "dav-3510"}
LOG2E = 1.44269504088896340736


def flash_attention_ascend(batch: int, heads: int, seqlen: int, dim: int, dtype: str = "float16",
                           block_M: int = 128, block_N: int = 128, num_blocks: int = 32):
    """Build main(Q, K, V, O): persistent blocks, each taking (head, query tile) tasks in turn."""
    import tilelang.ascend.language as T

    accum = "float32"
    rows = block_M // 2  # each Vector core owns half of a query tile's rows
    tiles, kv_blocks = seqlen // block_M, seqlen // block_N
    assert tiles * block_M == seqlen and kv_blocks * block_N == seqlen, "seqlen % block != 0"
    scale = LOG2E / math.sqrt(dim)  # exp(x) = exp2(x * log2 e): fold it into the score scale
    shape = (batch * heads * seqlen, dim)

    @T.prim_func
    def main(Q: T.Tensor(shape, dtype), K: T.Tensor(shape, dtype), V: T.Tensor(shape, dtype),
             O: T.Tensor(shape, dtype)):
        with T.Kernel(num_blocks) as bx:
            q_l1 = T.alloc_l1((block_M, dim), dtype)
            k_l1 = T.alloc_l1((block_N, dim), dtype)
            v_l1 = T.alloc_l1((dim, block_N), dtype)  # V^T: the Cube's L1 GEMM is A @ B^T
            p_l1 = T.alloc_l1((block_M, block_N), dtype)
            s_l0c = T.alloc_l0c((block_M, block_N), accum)
            pv_l0c = T.alloc_l0c((block_M, dim), accum)
            s_ub = T.alloc_shared((rows, block_N), accum)
            p_ub = T.alloc_shared((rows, block_N), dtype)
            pv_ub = T.alloc_shared((rows, dim), accum)
            acc_ub = T.alloc_shared((rows, dim), accum)
            o_ub = T.alloc_shared((rows, dim), dtype)
            m_ub = T.alloc_shared((rows,), accum)
            l_ub = T.alloc_shared((rows,), accum)
            alpha_ub = T.alloc_shared((rows,), accum)

            for task in T.Persistent([batch * heads * tiles], num_blocks, bx):
                q0 = task * block_M  # tasks run head-major, so a task's rows are contiguous
                kv0 = task // tiles * seqlen
                T.copy(Q[q0:q0 + block_M, 0:dim], q_l1)
                with T.SimtVF(threads=rows):
                    for i in T.Parallel(rows):
                        m_ub[i] = -T.infinity(accum)
                        l_ub[i] = 0
                    for i, j in T.Parallel(rows, dim):
                        acc_ub[i, j] = 0
                for kb in T.Pipelined(kv_blocks, num_stages=2):
                    T.copy(K[kv0 + kb * block_N:kv0 + (kb + 1) * block_N, 0:dim], k_l1)
                    T.copy(V[kv0 + kb * block_N:kv0 + (kb + 1) * block_N, 0:dim], v_l1, transpose=True)
                    T.gemm(q_l1, k_l1, s_l0c, transpose_B=True, clear_accum=True)
                    T.dual_copy(s_l0c, s_ub)
                    with T.SimtVF(threads=rows):
                        for i in T.Parallel(rows):  # one thread per row: online softmax
                            m_new = T.alloc_var(accum)
                            total = T.alloc_var(accum)
                            m_new = m_ub[i]
                            for j in T.serial(block_N):
                                m_new = T.max(m_new, s_ub[i, j] * scale)
                            alpha_ub[i] = T.exp2(m_ub[i] - m_new)
                            total = 0
                            for j in T.serial(block_N):
                                p = T.exp2(s_ub[i, j] * scale - m_new)
                                p_ub[i, j] = T.cast(p, dtype)
                                total += p
                            l_ub[i] = l_ub[i] * alpha_ub[i] + total
                            m_ub[i] = m_new
                    T.dual_copy(p_ub, p_l1)
                    T.gemm(p_l1, v_l1, pv_l0c, transpose_B=True, clear_accum=True)
                    T.dual_copy(pv_l0c, pv_ub)
                    with T.SimtVF(threads=rows):
                        for i, j in T.Parallel(rows, dim):
                            acc_ub[i, j] = acc_ub[i, j] * alpha_ub[i] + pv_ub[i, j]
                with T.SimtVF(threads=rows):
                    for i, j in T.Parallel(rows, dim):
                        o_ub[i, j] = T.cast(acc_ub[i, j] / l_ub[i], dtype)
                T.dual_copy(o_ub, O[q0:q0 + block_M, 0:dim])

    return main


def lower_to_ascendc(batch: int = 1, heads: int = 2, seqlen: int = 512, dim: int = 128, **knobs) -> str:
    """The Ascend C source of one build, made on the CPU (no CANN, no NPU)."""
    import tilelang
    from tvm.target import Target

    target = Target(ASCEND_950)
    with target:
        return tilelang.lower(flash_attention_ascend(batch, heads, seqlen, dim, **knobs), target=target).kernel_source


def reference_check(batch: int = 2, heads: int = 8, seqlen: int = 1024, dim: int = 128,
                    dtype: str = "float16", **knobs) -> float:
    """On an Ascend 950 with CANN and torch_npu: run the kernel once against fp32 attention and
    return the relative L2 error (the suite's gate accepts < 1e-2 for fp16)."""
    import tilelang
    import torch
    import torch_npu  # noqa: F401  (registers the npu device)

    kernel = tilelang.compile(flash_attention_ascend(batch, heads, seqlen, dim, dtype, **knobs),
                              out_idx=[3], target="ascend")
    rows = batch * heads * seqlen
    q, k, v = (torch.randn(rows, dim, dtype=getattr(torch, dtype), device="npu") for _ in range(3))
    out = kernel(q, k, v).float().view(batch * heads, seqlen, dim)
    q, k, v = (t.float().view(batch * heads, seqlen, dim) for t in (q, k, v))
    ref = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(dim), dim=-1) @ v
    return float((out - ref).norm() / ref.norm())
