"""GEMV-style product for a few rows (M = 1..8), C = A @ B with A [M, K], B [K, N] (fp16/bf16).

Tensor cores do not pay at one to eight rows: the product is a stream over B. Each thread owns
`vec` adjacent columns (one 128-bit load of a B row segment) and a strided share of the K rows,
keeps `rows_in_flight` loads of B outstanding, and accumulates M x vec sums in fp32 registers on
the CUDA cores; the threads sharing columns then add their sums in shared memory. split_k > 1
spreads K over blocks too (fp32 partials, reduced by kernels.gemm.splitk_reduce)."""

import tilelang.language as T


def vector_width(N: int, elem_bytes: int = 2) -> int:
    """Columns per load: 128 bits when every B row starts 16-byte aligned, else narrower."""
    for vec in (16 // elem_bytes, 4, 2, 1):
        if N % vec == 0:
            return vec
    return 1


def gemv_kernel(M: int, N: int, K: int, dtype: str, block_N: int, rows_in_flight: int, threads: int,
                split_k: int, vec: int):
    """Block (bx, bz): columns [bx*block_N, +block_N) over the bz-th of split_k K ranges.
    Out-of-range rows and columns are clamped on load and contribute zero; C is [split_k, M, N]."""
    lanes = block_N // vec  # threads across the columns of a block
    groups = threads // lanes  # threads across K
    step = groups * rows_in_flight  # K rows a block consumes per iteration
    per_split = -(-(-(-K // split_k)) // step) * step
    out_dtype = dtype if split_k == 1 else "float"

    @T.prim_func
    def main(A: T.Tensor((M, K), dtype), B: T.Tensor((K, N), dtype), C: T.Tensor((split_k, M, N), out_dtype)):
        with T.Kernel(T.ceildiv(N, block_N), split_k, threads=threads) as (bx, bz):
            tx = T.get_thread_binding()
            col = bx * block_N + (tx % lanes) * vec
            acc = T.alloc_local((M, vec), "float")
            b = T.alloc_local((rows_in_flight, vec), dtype)
            a = T.alloc_local((rows_in_flight, M), "float")
            sums = T.alloc_shared((M, block_N), "float")
            T.clear(acc)
            T.clear(sums)
            T.sync_threads()
            for it in T.serial(per_split // step):
                # Loads first, all independent, so rows_in_flight of them are outstanding at once.
                for r in T.unroll(rows_in_flight):
                    k = bz * per_split + it * step + r * groups + tx // lanes
                    kc = T.min(k, K - 1)
                    if vec == 1:
                        b[r, 0] = B[kc, T.min(col, N - 1)]
                    else:
                        for v in T.vectorized(vec):  # the last block re-reads in-range columns
                            b[r, v] = B[kc, T.min(col, N - vec) + v]
                    for m in T.unroll(M):
                        a[r, m] = T.if_then_else(k < K, A[m, kc], T.cast(0, dtype)).astype("float")
                for r in T.unroll(rows_in_flight):
                    for m in T.unroll(M):
                        for v in T.unroll(vec):
                            acc[m, v] += a[r, m] * b[r, v].astype("float")
            for m in T.unroll(M):
                for v in T.unroll(vec):
                    T.atomic_add(sums[m, (tx % lanes) * vec + v], acc[m, v])
            T.sync_threads()
            for m, j in T.Parallel(M, block_N):
                if bx * block_N + j < N:
                    C[bz, m, bx * block_N + j] = sums[m, j]

    return main
