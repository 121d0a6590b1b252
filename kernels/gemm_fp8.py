"""fp8 GEMM as a linear layer computes it: C[M, N] = (A[M, K] @ B[N, K]^T) * scales, A and B
e4m3 (both K-major, as the fp8 wgmma needs), fp32 accumulation, C in bf16.

Scales: per tensor (SA, SB one number each), or per block as DeepSeek-V3 quantizes (block_scaled):
SA [M, ceil(K/128)] for 1x128 groups of each A row, SB [ceil(N/128), ceil(K/128)] for 128x128
blocks of B. Per-block scaling promotes every 128-deep step: its wgmma sums go into a fresh
fragment that is scaled and added to the fp32 accumulator (which also bounds the error of the
tensor cores' reduced-precision fp8 accumulation). `swap` computes C^T for few rows, as in
kernels/gemm.py."""

from dataclasses import asdict, dataclass

import tilelang.language as T

from kernels._compile import compile_kernel

FP8 = "float8_e4m3"
SCALE_BLOCK = 128


def gemm_fp8_kernel(M: int, N: int, K: int, block_M: int, block_N: int, block_K: int, num_stages: int,
                    threads: int, swizzle_panel: int, swap: bool = False, block_scaled: bool = False,
                    out_dtype: str = "bfloat16"):
    """Block (bx, by) owns a [block_M, block_N] tile of C; ragged edges are bounds-checked.
    With block_scaled, block_K is 128 and block_N divides 128 (one B scale per tile and step)."""
    kb = -(-K // SCALE_BLOCK)
    sa_shape = (M, kb) if block_scaled else (1,)
    sb_shape = (-(-N // SCALE_BLOCK), kb) if block_scaled else (1,)
    tile = (block_N, block_M) if swap else (block_M, block_N)

    @T.prim_func
    def main(A: T.Tensor((M, K), FP8), B: T.Tensor((N, K), FP8), SA: T.Tensor(sa_shape, "float"),
             SB: T.Tensor(sb_shape, "float"), C: T.Tensor((M, N), out_dtype)):
        with T.Kernel(T.ceildiv(N, block_N), T.ceildiv(M, block_M), threads=threads) as (bx, by):
            A_s = T.alloc_shared((block_M, block_K), FP8)
            B_s = T.alloc_shared((block_N, block_K), FP8)
            acc = T.alloc_fragment(tile, "float")
            part = T.alloc_fragment(tile, "float")
            C_s = T.alloc_shared(tile, out_dtype)
            T.use_swizzle(panel_size=swizzle_panel, enable=swizzle_panel > 0)
            T.clear(acc)
            for k in T.Pipelined(T.ceildiv(K, block_K), num_stages=num_stages):
                T.copy(A[by * block_M, k * block_K], A_s)
                T.copy(B[bx * block_N, k * block_K], B_s)
                if block_scaled:
                    if swap:
                        T.gemm(B_s, A_s, part, transpose_B=True, clear_accum=True)
                    else:
                        T.gemm(A_s, B_s, part, transpose_B=True, clear_accum=True)
                    sb = SB[bx * block_N // SCALE_BLOCK, k]
                    for i, j in T.Parallel(*tile):
                        acc[i, j] += part[i, j] * sb * SA[T.min(by * block_M + (j if swap else i), M - 1), k]
                elif swap:
                    T.gemm(B_s, A_s, acc, transpose_B=True)
                else:
                    T.gemm(A_s, B_s, acc, transpose_B=True)
            for i, j in T.Parallel(*tile):
                C_s[i, j] = acc[i, j] if block_scaled else acc[i, j] * SA[0] * SB[0]
            if swap:
                for i, j in T.Parallel(block_M, block_N):
                    if by * block_M + i < M and bx * block_N + j < N:
                        C[by * block_M + i, bx * block_N + j] = C_s[j, i]
            else:
                T.copy(C_s, C[by * block_M, bx * block_N])

    return main


@dataclass(frozen=True)
class Fp8Knobs:
    block_M: int = 128
    block_N: int = 128
    block_K: int = 128
    num_stages: int = 4
    threads: int = 256
    swizzle_panel: int = 8
    swap: bool = False


def fp8_candidates(M: int, N: int, K: int, block_scaled: bool = False) -> list[Fp8Knobs]:
    """A short list per shape class; block_K is 128 throughout (per-block scales need it)."""
    if M > 128:
        out = [Fp8Knobs(), Fp8Knobs(block_N=256, num_stages=3), Fp8Knobs(block_M=64, threads=128, num_stages=6)]
        if not block_scaled:
            out.append(Fp8Knobs(block_M=128, block_N=256, num_stages=4, swizzle_panel=16))
        return [k for k in out if not block_scaled or SCALE_BLOCK % k.block_N == 0]
    rows = 8 * -(-M // 8)  # swapped: the M rows on the wgmma's N side
    return [Fp8Knobs(block_M=rows, block_N=bn, num_stages=s, threads=128, swizzle_panel=0, swap=True)
            for bn, s in ((128, 6), (64, 8))] + [Fp8Knobs(block_M=64, block_N=64, num_stages=8, threads=128,
                                                           swizzle_panel=0)]


def compile_gemm_fp8(M: int, N: int, K: int, knobs: Fp8Knobs, block_scaled: bool = False, target=None):
    return compile_kernel(gemm_fp8_kernel, M, N, K, target=target, block_scaled=block_scaled, **asdict(knobs))


def gemm_fp8(a, b, scale_a, scale_b, out, knobs: Fp8Knobs | None = None):
    """out[M, N] (bf16) = (a[M, K] @ b[N, K]^T) scaled; per-tensor scales are 1-element fp32
    tensors, per-block ones [M, K/128] and [N/128, K/128] (rounded up)."""
    M, K = a.shape
    N = b.shape[0]
    if b.shape[1] != K or tuple(out.shape) != (M, N):
        raise ValueError(f"gemm_fp8: shapes a{tuple(a.shape)} b{tuple(b.shape)} out{tuple(out.shape)} do not chain")
    block_scaled = scale_a.numel() > 1
    kernel = compile_gemm_fp8(M, N, K, knobs or fp8_candidates(M, N, K, block_scaled)[0], block_scaled)
    kernel(a, b, scale_a.reshape(-1) if not block_scaled else scale_a, scale_b.reshape(-1) if not block_scaled
           else scale_b, out)
    return out
