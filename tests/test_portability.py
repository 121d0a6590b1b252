"""Hardware profile resolution, one quick portability build per target kind, the CSV schema."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from repro.measure.hardware import Device, HardwareError, amd_arch, ascend_arch, resolve_profile
from repro.portability import COLUMNS, STATUSES, plan, run
from tests.helpers import compose_config

ROOT = Path(__file__).resolve().parent.parent
H100 = Device("nvidia", "NVIDIA H100 80GB HBM3", 8, "sm_90")
MI300X = Device("amd", "AMD Instinct MI300X", 8, "gfx942")


def test_auto_resolves_h100():
    assert resolve_profile("auto", H100)["name"] == "h100"


def test_forcing_another_vendor_is_refused_clearly():
    with pytest.raises(HardwareError, match=r"hardware=mi300x does not match the device present .*H100"):
        resolve_profile("mi300x", H100)


@pytest.mark.parametrize("device", [MI300X, Device("amd", "", 1, amd_arch("gfx942:sramecc+:xnack-"))])
def test_mi300x_by_name_or_by_gfx_arch(device):
    assert resolve_profile("auto", device)["name"] == "mi300x"


def test_ascend_910b():
    name = "Ascend910B2"
    assert ascend_arch(name) == "ascend910b" and ascend_arch("Ascend950PR_9589") == "ascend950"
    assert resolve_profile("auto", Device("ascend", name, 8, ascend_arch(name)))["name"] == "ascend910b"


def test_no_device_and_unknown_device_say_why():
    with pytest.raises(HardwareError, match="no GPU or NPU found"):
        resolve_profile("auto", None)
    with pytest.raises(HardwareError, match="no hardware profile matches"):
        resolve_profile("auto", Device("nvidia", "NVIDIA A100-SXM4-80GB", 1, "sm_80"))
    with pytest.raises(HardwareError, match="unknown hardware profile"):
        resolve_profile("b200", H100)


def test_every_kernel_builder_has_a_portability_entry():
    """A builder added to kernels/ must join the table (the loc budgets list every builder; a key
    `path:a+b` budgets builders a and b together, each needs its own entry)."""
    cfg = compose_config("experiment=portability")
    budgets = {name for key in compose_config("experiment=loc").loc.budgets
               for name in key.rsplit(":", 1)[1].split("+")}
    assert "mla_decode_combine" in budgets and not any("+" in name for name in budgets)
    builders = {job["kernel"] for job in plan(dict(cfg.portability))}
    from repro.portability.catalog import build_spec

    covered = {build_spec(k, dict(cfg.portability.kernels[k])).builder.__name__ for k in builders}
    assert budgets <= covered, f"no portability entry for {sorted(budgets - covered)}"


def _settings(tmp_path, kernels, targets) -> dict:
    cfg = compose_config("experiment=portability")
    s = dict(cfg.portability)
    s.update(out=str(tmp_path / "portability.csv"), only_kernels=kernels, only_targets=targets, jobs=2,
             timeout_s=300)
    return {"portability": s}


def test_gemm_compiles_for_sm80_and_lowers_for_hip(tmp_path):
    rows = {r["target"]: r for r in run(_settings(tmp_path, ["gemm"], ["sm_80", "gfx942", "ascend910b"]))}
    assert rows["sm_80"]["status"] == "compiled", rows["sm_80"]["reason"]
    assert "mma.sync" in rows["sm_80"]["features"] and "wgmma" not in rows["sm_80"]["features"]
    assert rows["gfx942"]["status"] in ("compiled", "lowered"), rows["gfx942"]["reason"]
    assert "mfma" in rows["gfx942"]["features"]
    assert rows["ascend910b"]["status"] == "not available" and "tilelang-ascend" in rows["ascend910b"]["reason"]
    with open(tmp_path / "portability.csv", newline="") as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == COLUMNS and len(written) == 3


def test_rerun_resumes_and_redo_rebuilds(tmp_path, capsys):
    settings = _settings(tmp_path, ["gemm"], ["ascend910b"])
    first = run(settings)
    assert first[0]["code_hash"]
    run(settings)
    assert "0 build(s), 1 kept" in capsys.readouterr().out
    settings["portability"]["redo"] = True
    run(settings)
    assert "1 build(s), 0 kept" in capsys.readouterr().out


def test_compiled_becomes_run_only_with_measured_rows(tmp_path):
    from repro.portability import mark_run

    row = {"kernel": "gemm", "target": "sm_90a", "status": "compiled", "reason": "nvcc 13.0"}
    settings = {"ran_on": {"sm_90a": ["h100"]}, "results": str(tmp_path)}
    assert mark_run(row, settings)["status"] == "compiled"  # no results: not run
    (tmp_path / "h100").mkdir()
    with open(tmp_path / "h100" / "gemm.csv", "w", newline="") as f:
        f.write("experiment,backend,status\ngemm,tilelang,incorrect\ngemm,cublas,ok\n")
    assert mark_run(row, settings)["status"] == "compiled"  # no ok row of the TileLang backend
    with open(tmp_path / "h100" / "gemm.csv", "a", newline="") as f:
        f.write("gemm,tilelang,ok\n")
    ran = mark_run(row, settings)
    assert ran["status"] == "run" and "results/h100/gemm.csv" in ran["reason"]
    assert mark_run({**row, "status": "lowered"}, settings)["status"] == "lowered"
    assert mark_run(ran, {**settings, "results": str(tmp_path / "none")})["reason"] == "nvcc 13.0"


def test_hip_compile_records_only_real_code_objects(tmp_path):
    """Where a clang with the amdgcn target and HIP headers exists (e.g. Debian's clang-19 and
    libamdhip64-dev), a plain HIP kernel compiles to an AMDGPU code object for gfx942."""
    from repro.portability.targets import hip_clang, hip_device_compile, is_amdgpu_object

    clang, _, why = hip_clang()
    if clang is None:
        pytest.skip(f"no HIP device compiler: {why}")
    plain = '#include <hip/hip_runtime.h>\nextern "C" __global__ void k(float* x) { x[threadIdx.x] *= 2.0f; }\n'
    obj, note = hip_device_compile(plain, "gfx942", str(tmp_path))
    assert obj and is_amdgpu_object(obj), note
    (tmp_path / "x").mkdir()
    broken, note = hip_device_compile(plain.replace("2.0f;", "2.0f"), "gfx942", str(tmp_path / "x"))
    assert broken is None, note


def test_fp8_indexer_lowers_for_hip_with_fnuz():
    """tilelang 0.1.15's HIP codegen has no OCP e4m3 type, but lowers e4m3fnuz to fp8 MFMA."""
    from repro.portability.child import build

    cfg = compose_config("experiment=portability").portability
    params = {**dict(cfg.kernels.dsa_indexer), **dict(cfg.target_params.gfx942.dsa_indexer)}
    assert params["fp8"] == "float8_e4m3fnuz"
    result = build("dsa_indexer", params, dict(cfg.targets.gfx942))
    assert result["status"] in ("lowered", "compiled"), result["reason"]
    assert "mfma" in result["features"] and "fp8" in result["features"]


def test_committed_table_schema_and_coverage():
    path = ROOT / "results" / "portability.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == COLUMNS
    cfg = compose_config("experiment=portability").portability
    only = cfg.get("kernel_targets") or {}
    expected = {(k, t) for k in cfg.kernels for t in cfg.targets if t in only.get(k, [t])}
    assert {(r["kernel"], r["target"]) for r in rows} == expected
    for r in rows:
        assert r["status"] in STATUSES
        assert r["status"] in ("compiled", "run") or r["reason"], f"{r['kernel']}@{r['target']}: needs its reason"
        assert r["status"] != "compiled" or r["target"] not in ("gfx942",) or "code object" in r["reason"]
