"""Compiling TileLang builders for the right target, with one in-process cache."""
from __future__ import annotations

import functools
import os

# A bare "cuda" target means sm_50 on a machine without a GPU, which nvcc 13 rejects, so the
# target is explicit. REPRO_TILELANG_TARGET overrides it (e.g. for sm_80 or HIP builds).
HOPPER = {"kind": "cuda", "arch": "sm_90a"}


def default_target():
    """The device's own target when a GPU is present, else Hopper (compile-only on a CPU)."""
    override = os.environ.get("REPRO_TILELANG_TARGET")
    if override:
        return target_from_string(override)
    try:
        import torch

        if torch.cuda.is_available():
            if getattr(torch.version, "hip", None):
                arch = getattr(torch.cuda.get_device_properties(0), "gcnArchName", "gfx942").split(":")[0]
                return {"kind": "hip", "mcpu": arch}
            major, minor = torch.cuda.get_device_capability()
            arch = f"sm_{major}{minor}" + ("a" if major == 9 else "")
            return {"kind": "cuda", "arch": arch}
    except Exception:  # torch missing or broken: compile-only use
        pass
    return HOPPER


def sm_count(device=None) -> int:
    """The SM count of `device` (default: the current CUDA device), or 132 (an H100 SXM or H200)
    where there is none: compile-only use, or a CPU tensor's device."""
    import torch

    if device is not None and getattr(device, "type", "cuda") != "cuda":
        return 132
    if not torch.cuda.is_available():
        return 132
    return torch.cuda.get_device_properties(torch.cuda.current_device() if device is None else device).multi_processor_count


def target_from_string(text: str):
    """'sm_90a' / 'sm_80' -> CUDA target dict; 'hip' or 'gfx942' -> HIP; anything else as is."""
    if text.startswith("sm_"):
        return {"kind": "cuda", "arch": text}
    if text.startswith("gfx"):
        return {"kind": "hip", "mcpu": text}
    return text


def _freeze(target):
    return tuple(sorted(target.items())) if isinstance(target, dict) else target


@functools.lru_cache(maxsize=None)
def _compile_cached(builder, args: tuple, kwargs: tuple, out_idx, target_key, pass_configs):
    import tilelang

    func = builder(*args, **dict(kwargs))
    target = dict(target_key) if isinstance(target_key, tuple) else target_key
    return tilelang.compile(
        func,
        out_idx=list(out_idx) if out_idx is not None else None,
        target=target,
        pass_configs=dict(pass_configs) if pass_configs else None,
    )


def compile_kernel(builder, *args, out_idx=None, target=None, pass_configs=None, **kwargs):
    """Build `builder(*args, **kwargs)` (a T.prim_func) and compile it once per argument set."""
    target = default_target() if target is None else target
    out = tuple(out_idx) if isinstance(out_idx, (list, tuple)) else out_idx
    configs = tuple(sorted(pass_configs.items())) if pass_configs else None
    return _compile_cached(builder, args, tuple(sorted(kwargs.items())), out, _freeze(target), configs)


def ptxas_usage(kernel, arch: str = "sm_90a") -> dict:
    """The compiler's resource report of a compiled CUDA kernel's device source (no GPU needed):
    registers per thread and spilled bytes (ptxas -v, through the nvcc and headers TileLang uses)."""
    import re
    import subprocess
    import tempfile

    import tilelang
    from tilelang.contrib.nvcc import get_nvcc_compiler

    root = os.path.dirname(tilelang.__file__)
    with tempfile.TemporaryDirectory() as tmp:
        cu = os.path.join(tmp, "kernel.cu")
        with open(cu, "w") as fh:
            fh.write(kernel.get_kernel_source())
        done = subprocess.run([get_nvcc_compiler(), f"-arch={arch}", "-std=c++17", "-cubin", "-o", os.path.join(tmp, "k.cubin"),
                               "-Xptxas", "-v", "--use_fast_math", f"-I{root}/src", f"-I{root}/3rdparty/cutlass/include",
                               f"-I{root}/3rdparty/tvm/include", cu], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"nvcc failed on the kernel's source: {done.stderr.strip()[-400:]}")
    text = done.stderr

    def last(pattern):
        found = re.findall(pattern, text)
        if not found:
            raise RuntimeError(f"no {pattern!r} in ptxas' report: {text[-400:]}")
        return int(found[-1])

    return {"registers": last(r"Used (\d+) registers"), "spill_stores": last(r"(\d+) bytes spill stores"),
            "spill_loads": last(r"(\d+) bytes spill loads"), "stack": last(r"(\d+) bytes stack frame")}
