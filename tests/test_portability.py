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
    """A builder added to kernels/ must join the table (the loc budgets list every builder)."""
    cfg = compose_config("experiment=portability")
    budgets = {key.split(":")[1] for key in compose_config("experiment=loc").loc.budgets}
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


def test_gemm_builds_for_sm80_and_lowers_for_hip(tmp_path):
    rows = {r["target"]: r for r in run(_settings(tmp_path, ["gemm"], ["sm_80", "gfx942", "ascend910b"]))}
    assert rows["sm_80"]["status"] == "built", rows["sm_80"]["reason"]
    assert "mma.sync" in rows["sm_80"]["features"] and "wgmma" not in rows["sm_80"]["features"]
    assert rows["gfx942"]["status"] in ("built", "lowered"), rows["gfx942"]["reason"]
    assert "mfma" in rows["gfx942"]["features"]
    assert rows["ascend910b"]["status"] in ("unsupported", "failed", "built", "lowered")
    with open(tmp_path / "portability.csv", newline="") as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == COLUMNS and len(written) == 3


def test_committed_table_schema_and_coverage():
    path = ROOT / "results" / "portability.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == COLUMNS
    cfg = compose_config("experiment=portability").portability
    assert {(r["kernel"], r["target"]) for r in rows} == {(k, t) for k in cfg.kernels for t in cfg.targets}
    for r in rows:
        assert r["status"] in STATUSES
        assert r["status"] == "built" or r["reason"], f"{r['kernel']}@{r['target']}: a non-build needs its reason"
