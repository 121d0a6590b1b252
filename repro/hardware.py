"""Which accelerator is present, and which hardware profile (configs/hardware/*.yaml) describes it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import OmegaConf

from repro.experiment import CONFIG_DIR


class HardwareError(RuntimeError):
    """No usable device, or a profile that does not describe the device present."""


@dataclass(frozen=True)
class Device:
    vendor: str  # nvidia | amd | ascend
    name: str  # as the driver reports it, e.g. "NVIDIA H100 80GB HBM3"
    count: int
    arch: str  # sm_90 / gfx942 / ascend910b


def detect_device() -> Optional[Device]:
    """The first visible accelerator, or None on a CPU-only machine."""
    try:
        import torch
    except ImportError:
        return None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        if getattr(torch.version, "hip", None):
            arch = getattr(props, "gcnArchName", "gfx").split(":")[0]
            return Device("amd", props.name, torch.cuda.device_count(), arch)
        return Device("nvidia", props.name, torch.cuda.device_count(), f"sm_{props.major}{props.minor}")
    try:
        import torch_npu  # noqa: F401  (registers torch.npu)

        if torch.npu.is_available():
            return Device("ascend", torch.npu.get_device_name(0), torch.npu.device_count(), "ascend")
    except Exception:
        pass
    return None


def profile_names() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "hardware").glob("*.yaml") if p.stem != "auto")


def load_profile(name: str) -> dict:
    path = CONFIG_DIR / "hardware" / f"{name}.yaml"
    if not path.exists():
        raise HardwareError(f"unknown hardware profile {name!r}; known: auto, {', '.join(profile_names())}")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def matches(profile: dict, device: Device) -> bool:
    name = device.name.lower()
    return profile["vendor"] == device.vendor and any(m.lower() in name for m in profile["match"])


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
