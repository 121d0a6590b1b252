"""Which accelerator is present, and which hardware profile (configs/hardware/*.yaml) describes it."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from omegaconf import OmegaConf

from repro.measure.experiment import CONFIG_DIR


class HardwareError(RuntimeError):
    """No usable device, or a profile that does not describe the device present."""


@dataclass(frozen=True)
class Device:
    vendor: str  # nvidia | amd | ascend
    name: str  # as the driver reports it, e.g. "NVIDIA H100 80GB HBM3"
    count: int
    arch: str  # sm_90 / gfx942 / ascend910b (see amd_arch, ascend_arch)


def detect_device() -> Optional[Device]:
    """The first visible accelerator, or None on a CPU-only machine."""
    try:
        import torch
    except ImportError:
        return None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        if getattr(torch.version, "hip", None):  # ROCm builds of torch answer through torch.cuda
            arch = amd_arch(getattr(props, "gcnArchName", ""))
            return Device("amd", props.name or arch, torch.cuda.device_count(), arch)
        return Device("nvidia", props.name, torch.cuda.device_count(), f"sm_{props.major}{props.minor}")
    return _detect_ascend()


def _detect_ascend() -> Optional[Device]:
    try:
        import torch
        import torch_npu  # noqa: F401  (registers torch.npu)

        if torch.npu.is_available():
            name = torch.npu.get_device_name(0)
            return Device("ascend", name, torch.npu.device_count(), ascend_arch(name))
    except Exception:  # torch_npu absent, or present without a driver
        pass
    return None


def amd_arch(gcn_arch_name: str) -> str:
    """'gfx942:sramecc+:xnack-' -> 'gfx942' (the ISA TileLang's HIP target takes as mcpu)."""
    return gcn_arch_name.split(":")[0].strip() or "gfx"


def ascend_arch(name: str) -> str:
    """'Ascend910B2' -> 'ascend910b', 'Ascend950PR_9589' -> 'ascend950': the chip family."""
    match = re.search(r"ascend\s*(\d+)([a-z](?=\d|_|$))?", name.lower())  # B of 910B2, not P of 950PR
    return f"ascend{match.group(1)}{match.group(2) or ''}" if match else "ascend"


def profile_names() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "hardware").glob("*.yaml") if p.stem != "auto")


def load_profile(name: str) -> dict:
    path = CONFIG_DIR / "hardware" / f"{name}.yaml"
    if not path.exists():
        raise HardwareError(f"unknown hardware profile {name!r}; known: auto, {', '.join(profile_names())}")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def matches(profile: dict, device: Device) -> bool:
    """Same vendor, and a `match` pattern inside the device name or equal to its arch (some ROCm
    releases report an empty marketing name, but always the gfx ISA)."""
    name, arch = device.name.lower(), device.arch.lower()
    return profile["vendor"] == device.vendor and any(
        m.lower() in name or m.lower() == arch for m in profile["match"])


def resolve_profile(requested: str, device: Optional[Device]) -> dict:
    """`auto` picks the profile whose patterns match the device; a named one must match it too."""
    if device is None:
        raise HardwareError(
            "no GPU or NPU found: measuring needs an NVIDIA, AMD or Ascend device. "
            "On this machine `make figures` / `make paper` regenerate tables and figures from results/."
        )
    if requested == "auto":
        found = [n for n in profile_names() if matches(load_profile(n), device)]
        if not found:
            raise HardwareError(
                f"no hardware profile matches {device.name!r} ({device.vendor}); add one under "
                f"configs/hardware/ or pass hardware=<name> (known: {', '.join(profile_names())})"
            )
        # The most specific pattern wins (e.g. "H200" over a generic one).
        return load_profile(max(found, key=lambda n: max(len(m) for m in load_profile(n)["match"])))
    profile = load_profile(requested)
    if not matches(profile, device):
        raise HardwareError(
            f"hardware={requested} does not match the device present ({device.name!r}, {device.vendor}); "
            f"use hardware=auto or a profile whose `match` patterns name this device"
        )
    return profile
