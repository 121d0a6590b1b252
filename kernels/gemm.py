"""GEMM, C = A @ B (A [M, K], B [K, N], fp16/bf16 in, fp32 accumulation, C in the input dtype)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import tilelang.language as T

from kernels._compile import compile_kernel

DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


def gemm_kernel(M: int, N: int, K: int, dtype: str, block_M: int, block_N: int, block_K: int,
                num_stages: int, threads: int, swizzle_panel: int):
    """Tile by tile: each block owns a [block_M, block_N] tile of C and walks K in pipelined steps."""
    @T.prim_func
    def main(A: T.Tensor((M, K), dtype), B: T.Tensor((K, N), dtype), C: T.Tensor((M, N), dtype)):
        with T.Kernel(T.ceildiv(N, block_N), T.ceildiv(M, block_M), threads=threads) as (bx, by):
            A_s = T.alloc_shared((block_M, block_K), dtype)
            B_s = T.alloc_shared((block_K, block_N), dtype)
            C_acc = T.alloc_fragment((block_M, block_N), "float")
            C_s = T.alloc_shared((block_M, block_N), dtype)
            # Neighbouring blocks share A rows and B columns: raster in panels so they hit L2.
            T.use_swizzle(panel_size=swizzle_panel, enable=swizzle_panel > 0)
            T.clear(C_acc)
            for k in T.Pipelined(T.ceildiv(K, block_K), num_stages=num_stages):
                T.copy(A[by * block_M, k * block_K], A_s)
                T.copy(B[k * block_K, bx * block_N], B_s)
                T.gemm(A_s, B_s, C_acc)
            # Stage through shared memory so the store to C is wide and coalesced.
            T.copy(C_acc, C_s)
            T.copy(C_s, C[by * block_M, bx * block_N])

    return main


@dataclass(frozen=True)
class GemmKnobs:
    block_M: int = 128
    block_N: int = 256
    block_K: int = 64
    num_stages: int = 3
    threads: int = 256
    swizzle_panel: int = 8


# Candidates the search tries (the first is the default). 128x256 tiles feed two warpgroups
# with 64-row wgmma each; 128x128 helps when there are too few large tiles to fill 132 SMs.
CANDIDATES = (
    GemmKnobs(),
    GemmKnobs(block_N=128, num_stages=4),
    GemmKnobs(block_M=256, block_N=128, num_stages=3),
    GemmKnobs(block_N=256, block_K=64, num_stages=4, swizzle_panel=16),
    GemmKnobs(block_N=128, block_K=128, num_stages=3),
    # One warpgroup on 64-row tiles: small problems (1k^3 has 32 large tiles for 132 SMs).
    GemmKnobs(block_M=64, block_N=128, num_stages=4, threads=128),
    GemmKnobs(block_M=64, block_N=256, num_stages=3, threads=128),
)


def heuristic_knobs(M: int, N: int, K: int, sm_count: int = 132) -> GemmKnobs:
    """A choice without measuring: large tiles unless they leave most SMs idle."""
    tiles = -(-M // 128) * -(-N // 256)
    return CANDIDATES[0] if tiles >= sm_count else CANDIDATES[1]


def compile_gemm(M: int, N: int, K: int, dtype: str, knobs: GemmKnobs, target=None):
    if dtype not in DTYPES:
        raise ValueError(f"gemm: unsupported dtype {dtype!r}; supported: {', '.join(DTYPES)}")
    return compile_kernel(gemm_kernel, M, N, K, DTYPES[dtype], target=target, **asdict(knobs))


def gemm(a, b, out, knobs: GemmKnobs | None = None):
    """out[M, N] = a[M, K] @ b[K, N], written in place; returns out."""
    M, K = a.shape
    K2, N = b.shape
    if K != K2 or tuple(out.shape) != (M, N):
        raise ValueError(f"gemm: shapes a{tuple(a.shape)} b{tuple(b.shape)} out{tuple(out.shape)} do not chain")
    if not (a.dtype == b.dtype == out.dtype):
        raise ValueError(f"gemm: dtypes differ: {a.dtype}, {b.dtype}, {out.dtype}")
    dtype = {"torch.float16": "fp16", "torch.bfloat16": "bf16"}.get(str(a.dtype), str(a.dtype))
    kernel = compile_gemm(M, N, K, dtype, knobs or heuristic_knobs(M, N, K))
    kernel(a, b, out)
    return out
