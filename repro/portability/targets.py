"""Build targets of the portability table, and the device compiler each one needs.

A target is a TileLang/TVM target dict (`{"kind": "cuda", "arch": "sm_90a"}`, `{"kind": "hip",
"mcpu": "gfx942"}`, `{"kind": "ascend"}`). A kernel is `built` for it when the device compiler
made a binary, `lowered` when TileLang generated the device source but that compiler is absent.
`{"kind": "tilelang-ascend"}` stands for the separate tilelang-ascend distribution (Ascend
910B/A2/A3), which installs its own `tilelang` package and so cannot sit beside this one.
"""
from __future__ import annotations

import re
from typing import Optional

TILELANG_ASCEND = "tilelang-ascend"

# Markers of the hardware paths the generated source takes (names as TileLang emits them):
# they show, e.g., that sm_90a code uses wgmma + TMA while sm_80 code falls back to mma.sync.
FEATURES = {
    "cuda": {"wgmma": r"wgmma", "tma": r"tma_load|tma_store", "mma.sync": r"mma_sync|mma\.sync",
             "cp.async": r"cp_async", "ldmatrix": r"ldmatrix", "fp8": r"fp8_e4|e4m3"},
    "hip": {"mfma": r"mfma", "fp8": r"fp8|e4m3"},
    "ascend": {"cube": r"ASC_IS_AIC|ascend_gemm", "vector": r"ASC_IS_AIV|__simt_vf__|__simd_vf__"},
}


def kind_of(target: dict) -> str:
    return str(target.get("kind", ""))


def compiler_for(target: dict) -> tuple[Optional[str], str]:
    """(path of the device compiler, or None, and a one-line note saying which / why not)."""
    kind = kind_of(target)
    try:
        if kind == "cuda":
            return _nvcc()
        if kind == "hip":
            from tilelang.contrib.rocm import find_hipcc

            path = find_hipcc()
            return path, f"hipcc at {path}"
        if kind == "ascend":
            from tilelang.contrib.bisheng import find_bisheng_path

            path = find_bisheng_path()
            return path, f"bisheng at {path}"
    except Exception as exc:  # the finders raise with their own explanation
        return None, first_line(exc)
    return None, f"no device compiler known for target kind {kind!r}"


def _nvcc() -> tuple[Optional[str], str]:
    import os
    import shutil

    from tilelang.contrib.nvcc import find_cuda_path, get_cuda_version

    cuda = find_cuda_path()
    path = os.path.join(cuda, "bin", "nvcc") if cuda else shutil.which("nvcc")
    if not path or not os.path.exists(path):
        return None, "nvcc not found (set CUDA_HOME or put nvcc on PATH)"
    version = get_cuda_version(cuda)
    version = ".".join(map(str, version)) if isinstance(version, (tuple, list)) else version
    return path, f"nvcc {version}"


def tilelang_ascend_version() -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(TILELANG_ASCEND)
    except metadata.PackageNotFoundError:
        return None


def features(source: str, target: dict) -> str:
    table = FEATURES.get(kind_of(target), {})
    return " ".join(name for name, pattern in table.items() if re.search(pattern, source))


def first_line(exc: BaseException) -> str:
    """The message line of an error, skipping TVM's traceback and blank lines."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("Traceback", "File \"", "^", "~"))]
    message = next((ln for ln in lines if not re.match(r"^\d+: ", ln)), lines[0] if lines else "")
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
