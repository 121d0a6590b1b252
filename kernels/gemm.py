"""GEMM, C = A @ B (A [M, K], B [K, N], fp16/bf16 in, fp32 accumulation, C in the input dtype).

One tiled builder with knobs for every shape class: large tiles for big products, 64-row tiles
and more blocks for small ones, split-K (fp32 partials, then `splitk_reduce`) when M x N has too
few tiles to fill the SMs, and `swap` for few rows: the tile is computed as C^T = B^T A^T so that
N fills the wgmma's 64-row side and the M rows its 8..256-wide side. M = 1..8 can also take the
CUDA-core path of kernels/gemv.py. `plan_gemm` compiles a schedule into one callable."""

from dataclasses import asdict, dataclass, fields, replace

import tilelang.language as T

from kernels._compile import compile_kernel, sm_count as device_sms

DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


def gemm_kernel(M: int, N: int, K: int, dtype: str, block_M: int, block_N: int, block_K: int,
                num_stages: int, threads: int, swizzle_panel: int, split_k: int = 1, swap: bool = False):
    """Tile by tile: block (bx, by, bz) owns a [block_M, block_N] tile of C and walks the bz-th of
    split_k equal K ranges in pipelined steps. C is [split_k, M, N]: the product itself (in the
    input dtype) when split_k == 1, else fp32 partial sums. Ragged edges are bounds-checked."""
    steps = -(-(-(-K // block_K)) // split_k)  # K steps per split
    out_dtype = dtype if split_k == 1 else "float"
    tile = (block_N, block_M) if swap else (block_M, block_N)

    @T.prim_func
    def main(A: T.Tensor((M, K), dtype), B: T.Tensor((K, N), dtype), C: T.Tensor((split_k, M, N), out_dtype)):
        with T.Kernel(T.ceildiv(N, block_N), T.ceildiv(M, block_M), split_k, threads=threads) as (bx, by, bz):
            A_s = T.alloc_shared((block_M, block_K), dtype)
            B_s = T.alloc_shared((block_K, block_N), dtype)
            C_acc = T.alloc_fragment(tile, "float")
            C_s = T.alloc_shared(tile, out_dtype)
            # Neighbouring blocks share A rows and B columns: raster in panels so they hit L2.
            T.use_swizzle(panel_size=swizzle_panel, enable=swizzle_panel > 0)
            T.clear(C_acc)
            for k in T.Pipelined(steps, num_stages=num_stages):
                T.copy(A[by * block_M, (bz * steps + k) * block_K], A_s)
                T.copy(B[(bz * steps + k) * block_K, bx * block_N], B_s)
                if swap:
                    T.gemm(B_s, A_s, C_acc, transpose_A=True, transpose_B=True)
                else:
                    T.gemm(A_s, B_s, C_acc)
            T.copy(C_acc, C_s)
            if swap:  # C_s holds the tile transposed: write it back element by element
                for i, j in T.Parallel(block_M, block_N):
                    if by * block_M + i < M and bx * block_N + j < N:
                        C[bz, by * block_M + i, bx * block_N + j] = C_s[j, i]
            else:  # staged through shared memory so the store to C is wide and coalesced
                T.copy(C_s, C[bz, by * block_M:(by + 1) * block_M, bx * block_N:(bx + 1) * block_N])

    return main


def splitk_reduce(M: int, N: int, split_k: int, dtype: str, block_N: int = 256):
    """C[m, n] = sum over z of P[z, m, n] (fp32), cast to the output dtype."""

    @T.prim_func
    def main(P: T.Tensor((split_k, M, N), "float"), C: T.Tensor((M, N), dtype)):
        with T.Kernel(T.ceildiv(N, block_N), M, threads=128) as (bx, by):
            acc = T.alloc_fragment((block_N,), "float")
            T.clear(acc)
            for z in T.serial(split_k):
                for j in T.Parallel(block_N):
                    acc[j] += T.if_then_else(bx * block_N + j < N, P[z, by, bx * block_N + j], 0.0)
            for j in T.Parallel(block_N):
                if bx * block_N + j < N:
                    C[by, bx * block_N + j] = acc[j]

    return main


@dataclass(frozen=True)
class GemmKnobs:
    block_M: int = 128
    block_N: int = 256
    block_K: int = 64
    num_stages: int = 3
    threads: int = 256
    swizzle_panel: int = 8
    split_k: int = 1
    swap: bool = False
    algo: str = "tile"  # "tile": gemm_kernel; "gemv": kernels/gemv.py (block_M, block_K, swap unused)

    @classmethod
    def from_dict(cls, data: dict) -> "GemmKnobs":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# The large-problem candidates (the first is the default). 128x256 tiles feed two warpgroups
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


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def split_for(tiles: int, k_steps: int, sm_count: int = 132, most: int = 16) -> int:
    """The smallest split of k_steps (a divisor, >= 4 steps a part) that gives >= sm_count
    blocks, else the largest such split."""
    best = 1
    for s in range(2, most + 1):
        if k_steps % s == 0 and k_steps // s >= 4:
            best = s
            if tiles * s >= sm_count:
                break
    return best if tiles < sm_count else 1


def stages_for(block_M: int, block_N: int, block_K: int, split_k: int, want: int, smem: int = 200 << 10) -> int:
    """The most pipeline stages (<= want) whose tiles fit in shared memory next to C's tile."""
    c_tile = block_M * block_N * (4 if split_k > 1 else 2)
    return max(2, min(want, (smem - c_tile) // ((block_M + block_N) * block_K * 2)))


def _tile(M, N, K, block_M, block_N, block_K, want, threads, swap, sm_count, split=True) -> list:
    """The knob set without and with split-K (when the tiles leave SMs idle)."""
    s = split_for(_ceil(M, block_M) * _ceil(N, block_N), _ceil(K, block_K), sm_count) if split else 1
    out = []
    for split_k in dict.fromkeys((1, s)):
        out.append(GemmKnobs(block_M, block_N, block_K, stages_for(block_M, block_N, block_K, split_k, want),
                             threads, 0, split_k, swap))
    return out


def candidates(M: int, N: int, K: int, dtype: str = "bf16", sm_count: int = 132) -> list[GemmKnobs]:
    """What the search tries for one shape, a short list per shape class (compiles are not free)."""
    if M > 256:
        out = list(CANDIDATES)
        if _ceil(M, 128) * _ceil(N, 128) < sm_count:  # small squares: more, smaller tiles
            out += _tile(M, N, K, 64, 64, 64, 4, 128, False, sm_count, split=False)
            out += _tile(M, N, K, 128, 128, 64, 4, 256, False, sm_count)[1:]
        return list(dict.fromkeys(out))
    out = []
    if M <= 128:  # swapped: N on the wgmma's 64-row side, the M rows (a multiple of 8) on its N side
        rows = 8 * _ceil(M, 8)
        for bn, bk in ((128, 128), (64, 128), (128, 64)):
            out += _tile(M, N, K, rows, bn, bk, 8, 128, True, sm_count)
    if M > 32:  # plain 64- and 128-row tiles
        out += _tile(M, N, K, 64, 128, 64, 6, 128, False, sm_count)
        out += _tile(M, N, K, 128, 128, 64, 4, 256, False, sm_count)
    if M <= 8:  # CUDA cores: 64 columns a block, 256 threads over K, 4 rows of B in flight each
        gemv = GemmKnobs(block_M=1, block_N=64, block_K=4, num_stages=1, threads=256, swizzle_panel=0,
                         algo="gemv")
        out += [gemv, replace(gemv, split_k=split_for(_ceil(N, 64), _ceil(K, 1024), 2 * sm_count))]
    return list(dict.fromkeys(out))


def heuristic_knobs(M: int, N: int, K: int, sm_count: int = 132) -> GemmKnobs:
    """A choice without measuring: large tiles unless they leave most SMs idle; swapped,
    split tiles for few rows."""
    if M <= 256:
        return candidates(M, N, K, sm_count=sm_count)[1]
    tiles = _ceil(M, 128) * _ceil(N, 256)
    return CANDIDATES[0] if tiles >= sm_count else CANDIDATES[1]


# model_knobs' tiles for M > 64 rows, each with its throughput relative to 128x256 per tile
# (bf16 on an H200, from a schedule study of 30 shapes: a full wave of 128x128 tiles runs
# about 0.8x as many FLOP/s as one of 128x256, and so on).
MODEL_TILES = (
    (GemmKnobs(block_N=256, num_stages=4, swizzle_panel=16), 1.0),
    (GemmKnobs(block_N=128, block_K=128, num_stages=3), 0.8),
    (GemmKnobs(block_M=64, block_N=256, num_stages=4, threads=128), 0.75),
    (GemmKnobs(block_M=64, block_N=128, num_stages=4, threads=128), 0.6),
)


def _swapped(M: int, N: int, K: int, sm_count: int) -> GemmKnobs:
    """Few rows on the wgmma's N side; split-K only when the columns leave half the SMs idle
    and there are rows enough to make the products compute-bound (M >= 128)."""
    rows = 8 * _ceil(M, 8)
    bn, bk = (64, 128) if rows <= 128 and K > 1024 else (128, 64)
    tiles = _ceil(N, bn)
    split = split_for(tiles, _ceil(K, bk), sm_count) if M >= 128 and 2 * tiles <= sm_count else 1
    return GemmKnobs(rows, bn, bk, stages_for(rows, bn, bk, split, 8), 128, 0, split, True)


def model_knobs(M: int, N: int, K: int, sm_count: int = 132) -> GemmKnobs:
    """The wave-count model (default_knobs takes it where it measured faster), chosen without
    measuring. Up to 64 rows (and 128, or 192 over many columns): swapped tiles. Otherwise the tile
    of MODEL_TILES that finishes first: waves of tiles over the SMs, each wave as long as one tile's
    work at that tile's relative throughput (64-row tiles only when rows of A are not 16-byte
    aligned, where no TMA copy serves). No split-K there: its reduction cost more than it saved at
    every shape of the study with more than 64 rows, except 128 rows swapped."""
    if M <= 64 or M == 128 or (M == 192 and _ceil(N, 128) >= sm_count):
        return _swapped(M, N, K, sm_count)
    tiles = [(k, eff) for k, eff in MODEL_TILES if K % 8 == 0 or k.block_M == 64]

    def cost(entry):
        k, eff = entry
        waves = _ceil(_ceil(M, k.block_M) * _ceil(N, k.block_N), sm_count)
        return waves * k.block_M * k.block_N / eff

    best = min(tiles, key=cost)[0]
    if M <= 256 and best.block_M == 64 and best.block_N == 128:  # short K loops: deeper pipeline
        best = replace(best, num_stages=6, swizzle_panel=0)
    return best


def default_knobs(M: int, N: int, K: int, sm_count: int = 132) -> GemmKnobs:
    """The schedule used when none was searched: model_knobs, where an A/B of the two on the
    H200 (54 shapes) found it faster, else heuristic_knobs: the heuristic's own schedule when
    the model picks the heuristic's tile, split and K step (large squares: its 3-stage
    pipeline measured 1-5% faster there), and from 65 to 128 rows (the model lost 3-4% at
    96x8192x8192 and 128x4096x4096 and won at others: not decided by the model)."""
    old, new = heuristic_knobs(M, N, K, sm_count), model_knobs(M, N, K, sm_count)
    shape = lambda k: (k.block_M, k.block_N, k.block_K, k.threads, k.split_k, k.swap)  # all but the pipeline
    return old if shape(old) == shape(new) or 64 < M <= 128 else new


def compile_gemm(M: int, N: int, K: int, dtype: str, knobs: GemmKnobs, target=None):
    """The main kernel of a schedule (gemm_kernel or gemv_kernel); C is [split_k, M, N]."""
    if dtype not in DTYPES:
        raise ValueError(f"gemm: unsupported dtype {dtype!r}; supported: {', '.join(DTYPES)}")
    if knobs.algo == "gemv":
        from kernels.gemv import gemv_kernel, vector_width

        return compile_kernel(gemv_kernel, M, N, K, DTYPES[dtype], target=target, block_N=knobs.block_N,
                              rows_in_flight=knobs.block_K, threads=knobs.threads, split_k=knobs.split_k,
                              vec=vector_width(N))
    args = {k: v for k, v in asdict(knobs).items() if k != "algo"}
    return compile_kernel(gemm_kernel, M, N, K, DTYPES[dtype], target=target, **args)


def compile_reduce(M: int, N: int, split_k: int, dtype: str, target=None):
    return compile_kernel(splitk_reduce, M, N, split_k, DTYPES[dtype], target=target)


class GemmPlan:
    """A compiled schedule for one shape: `plan(a, b, out)` runs it (and its reduction)."""

    def __init__(self, M: int, N: int, K: int, dtype: str, knobs: GemmKnobs, target=None):
        self.knobs = knobs
        self.main = compile_gemm(M, N, K, dtype, knobs, target)
        self.reduce = compile_reduce(M, N, knobs.split_k, dtype, target) if knobs.split_k > 1 else None
        self.partials = None

    def __call__(self, a, b, out):
        if self.reduce is None:
            self.main(a, b, out.unsqueeze(0))
            return out
        import torch

        shape = (self.knobs.split_k, *out.shape)
        if self.partials is None or self.partials.device != out.device:
            self.partials = torch.empty(shape, device=out.device, dtype=torch.float32)
        self.main(a, b, self.partials)
        self.reduce(self.partials, out)
        return out


def plan_gemm(M: int, N: int, K: int, dtype: str, knobs: GemmKnobs | None = None, target=None) -> GemmPlan:
    return GemmPlan(M, N, K, dtype, knobs or default_knobs(M, N, K, device_sms()), target)


def gemm(a, b, out, knobs: GemmKnobs | None = None):
    """out[M, N] = a[M, K] @ b[K, N], written in place; returns out."""
    M, K = a.shape
    K2, N = b.shape
    if K != K2 or tuple(out.shape) != (M, N):
        raise ValueError(f"gemm: shapes a{tuple(a.shape)} b{tuple(b.shape)} out{tuple(out.shape)} do not chain")
    if not (a.dtype == b.dtype == out.dtype):
        raise ValueError(f"gemm: dtypes differ: {a.dtype}, {b.dtype}, {out.dtype}")
    dtype = {"torch.float16": "fp16", "torch.bfloat16": "bf16"}.get(str(a.dtype), str(a.dtype))
    return _plan(M, N, K, dtype, knobs or default_knobs(M, N, K, device_sms()))(a, b, out)


_PLANS: dict = {}


def _plan(M, N, K, dtype, knobs) -> GemmPlan:
    key = (M, N, K, dtype, knobs)
    if key not in _PLANS:
        _PLANS[key] = GemmPlan(M, N, K, dtype, knobs)
    return _PLANS[key]
