"""Builds one kernel for one target; run as a child process so a crash or a hang stays local.

`python -m repro.portability.child '<json job>'` prints one line `RESULT <json>` with status,
reason, source_lines and features. Statuses: compiled (a device code object was produced),
lowered (device source generated; no compiler here made an object of it, reason says why),
failed (TileLang or the compiler refused; reason = the error's first line), not available
(nothing to try: the toolchain for that target cannot exist here). `run` is never set here: the
table marks a compiled kernel `run` when measured results show it ran (repro/portability).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

MARKER = "RESULT "


def build(kernel: str, params: dict, target: dict, keep_dir: str | None = None,
          fallback: dict | None = None) -> dict:
    """Build with the kernel's own schedule; if that fails and the config names fallback knobs for
    this target, build again with them and say so (the first error is kept in the reason)."""
    from repro.portability.catalog import build_spec
    from repro.portability.targets import (TILELANG_ASCEND, compiler_for, features, first_line, kind_of,
                                           tilelang_ascend_version)

    if kind_of(target) == TILELANG_ASCEND:
        return _tilelang_ascend(tilelang_ascend_version())
    compiler, note = compiler_for(target)
    spec = build_spec(kernel, params)
    prefix = ""
    try:
        source = _make(spec, target, compiler)
    except Exception as exc:
        if not fallback:
            raise
        spec, prefix = replace(spec, kwargs={**spec.kwargs, **fallback}), f"own schedule failed ({first_line(exc)}); "
        try:
            source = _make(spec, target, compiler)
        except Exception as again:
            raise RuntimeError(f"{prefix}with {json.dumps(fallback)} too: {first_line(again)}") from again
        prefix += f"used {json.dumps(fallback)}; "
    if keep_dir:
        _keep(source, Path(keep_dir), kernel, target)
    status, reason = ("compiled", note) if compiler else _device_only(source, target, note)
    return {"status": status, "reason": prefix + reason, "source_lines": len(source.splitlines()),
            "features": features(source, target), "knobs": json.dumps(spec.kwargs, sort_keys=True)}


def _device_only(source: str, target: dict, note: str) -> tuple[str, str]:
    """Without the target's own compiler: HIP source may still be compiled device-only by a clang
    that knows amdgcn (`compiled` only if an AMDGPU code object came out); otherwise `lowered`."""
    import tempfile

    from repro.portability.targets import hip_device_compile, kind_of

    if kind_of(target) == "hip":
        with tempfile.TemporaryDirectory() as folder:
            obj, how = hip_device_compile(source, str(target.get("mcpu", "gfx942")), folder)
        if obj:
            return "compiled", f"{note}; {how}"
        note = f"{note}; {how}"
    return "lowered", f"device source generated, no code object: {note}"


def _make(spec, target: dict, compiler: str | None) -> str:
    func = spec.prim_func()
    return _compile(func, target, spec.pass_configs) if compiler else _lower(func, target, spec.pass_configs)


def _compile(func, target: dict, pass_configs: dict | None) -> str:
    import tilelang

    kernel = tilelang.compile(func, target=_tvm_target(target), pass_configs=pass_configs)
    return kernel.get_kernel_source()


def _lower(func, target: dict, pass_configs: dict | None) -> str:
    import tilelang
    import tvm

    tvm_target = _tvm_target(target)
    with tvm.transform.PassContext(opt_level=3, config=pass_configs or {}), tvm_target:
        return tilelang.lower(func, target=tvm_target).kernel_source


def _tvm_target(target: dict):
    from tvm.target import Target

    return Target(dict(target))


def _tilelang_ascend(version: str | None) -> dict:
    """Ascend 910B (A2/A3) kernels need the separate tilelang-ascend distribution."""
    if version is None:
        reason = ("tilelang-ascend is not installed: it ships only aarch64 CPython 3.11 wheels and "
                  "installs its own `tilelang` package, which replaces tilelang here")
        return {"status": "not available", "reason": reason, "source_lines": 0, "features": ""}
    reason = (f"tilelang-ascend {version} is installed, but this suite has no build path for it: "
              "its Ascend kernels are written in its own dialect, not the GPU one of kernels/")
    return {"status": "not available", "reason": reason, "source_lines": 0, "features": ""}


def _keep(source: str, folder: Path, kernel: str, target: dict) -> None:
    suffix = {"cuda": "cu", "hip": "hip", "ascend": "cce"}.get(str(target.get("kind")), "txt")
    name = "_".join(str(v) for v in target.values())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{kernel}.{name}.{suffix}").write_text(source)


def main(argv: list[str]) -> int:
    job = json.loads(argv[1])
    start = time.perf_counter()
    try:
        result = build(job["kernel"], job["params"], job["target"], job.get("keep_dir"), job.get("fallback"))
    except Exception as exc:  # any refusal is a result, not a crash of the table
        from repro.portability.targets import first_line

        result = {"status": "failed", "reason": first_line(exc), "source_lines": 0, "features": ""}
    result["seconds"] = round(time.perf_counter() - start, 2)
    sys.stdout.flush()
    print(MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
