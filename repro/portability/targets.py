"""Build targets of the portability table, and the device compiler each one needs.

A target is a TileLang/TVM target dict (`{"kind": "cuda", "arch": "sm_90a"}`, `{"kind": "hip",
"mcpu": "gfx942"}`, `{"kind": "ascend"}`). A kernel is `compiled` for it when a device code
object was produced, `lowered` when TileLang generated the device source but no compiler made an
object of it. HIP without ROCm's hipcc: a clang that knows the amdgcn target, with HIP headers,
compiles the generated source device-only (`hip_device_compile`), and only an AMDGPU ELF counts.
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


EM_AMDGPU = 224  # ELF e_machine of an AMDGPU code object


def hip_clang() -> tuple[Optional[str], Optional[str], str]:
    """(clang, folder holding hip/hip_runtime.h, note): a clang that can target amdgcn and HIP
    headers, for a device-only compile where ROCm's hipcc is absent; (None, None, why) if not."""
    import os
    import shutil
    import subprocess

    names = [os.environ.get("HIP_CLANG") or ""] + [f"clang-{v}" for v in range(22, 15, -1)] + ["clang"]
    clang = next((shutil.which(n) for n in names if n and shutil.which(n)), None)
    if clang is None:
        return None, None, "no clang on PATH (set HIP_CLANG)"
    targets = subprocess.run([clang, "--print-targets"], capture_output=True, text=True).stdout
    if "amdgcn" not in targets:
        return None, None, f"{os.path.basename(clang)} has no amdgcn target"
    roots = [os.environ.get("ROCM_PATH", ""), "/opt/rocm", "/usr"]
    include = next((os.path.join(r, "include") for r in roots
                    if r and os.path.isfile(os.path.join(r, "include", "hip", "hip_runtime.h"))), None)
    if include is None:
        return None, None, f"{os.path.basename(clang)} knows amdgcn, but no HIP headers (hip/hip_runtime.h)"
    return clang, include, f"{os.path.basename(clang)} -x hip with the headers in {include}"


def hip_device_compile(source: str, mcpu: str, workdir: str) -> tuple[Optional[str], str]:
    """Compile generated HIP source for `mcpu` device-only; (path of the AMDGPU code object, note)
    or (None, why not: the compiler's first error line)."""
    import os
    import subprocess

    import tilelang

    clang, include, note = hip_clang()
    if clang is None:
        return None, note
    src, obj = os.path.join(workdir, "kernel.hip"), os.path.join(workdir, "kernel.co")
    with open(src, "w") as f:
        f.write(source)
    templates = os.path.join(os.path.dirname(tilelang.__file__), "src")
    cmd = [clang, "-x", "hip", f"--offload-arch={mcpu}", "--offload-device-only", "--no-gpu-bundle-output",
           "-nogpulib", "-O3", "-std=c++17", f"--hip-path={os.path.dirname(include)}", f"-I{templates}",
           *_device_bitcode(os.path.dirname(include)), "-c", src, "-o", obj]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode or not is_amdgpu_object(obj):
        errors = [ln.strip() for ln in proc.stderr.splitlines() if "error" in ln] or ["no code object written"]
        return None, f"{note}: {errors[0].split(': ', 1)[-1]}"
    return obj, f"{note}: AMDGPU code object of {os.path.getsize(obj)} bytes"


def _device_bitcode(root: str) -> list[str]:
    """Link ROCm's device libraries (ockl, ocml) by file: `-nogpulib` keeps clang from asking for
    an ISA-version library that an older device-libs package may lack for a newer chip."""
    import glob
    import os

    found = []
    for name in ("ockl.bc", "ocml.bc"):
        hits = glob.glob(os.path.join(root, "amdgcn", "bitcode", name)) + glob.glob(
            os.path.join(root, "lib", "*", "amdgcn", "bitcode", name))
        found += ["-Xclang", "-mlink-builtin-bitcode", "-Xclang", hits[0]] if hits else []
    return found


def is_amdgpu_object(path: str) -> bool:
    """An ELF file (or a clang offload bundle holding one) for the AMDGPU machine."""
    import os

    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] == b"\x7fELF":
        return int.from_bytes(data[18:20], "little") == EM_AMDGPU
    return data.startswith(b"__CLANG_OFFLOAD_BUNDLE__") and b"amdgcn" in data and b"\x7fELF" in data
