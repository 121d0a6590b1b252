"""The contract every experiment module fills in: cases, inputs, reference, formulas, backends."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

Case = dict  # parameter name -> python scalar
# The suite's dtype names (configs' `dtype`/`dtypes`, the results' `dtype` column) -> torch's.
TORCH_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32", "fp8": "float8_e4m3fn"}


def torch_dtype(name: str):
    import torch

    return getattr(torch, TORCH_DTYPES[name])


def selected_dtypes(cfg) -> list[str]:
    """`dtype=bf16` narrows the experiment's `dtypes` list to one."""
    return [cfg.dtype] if cfg.get("dtype") is not None else list(cfg.dtypes)


def needs_cuda() -> Optional[str]:
    """Default probe: usable when a CUDA (or ROCm, through torch.cuda) device is present."""
    try:
        import torch
    except ImportError:
        return "torch not installed"
    return None if torch.cuda.is_available() else "no CUDA device"


def first_missing(modules: Sequence[str]) -> Optional[str]:
    """The reason the first module that does not import is missing, or None."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or a broken build raising anything
            return f"{name} not installed ({type(exc).__name__})"
    return None


def needs_module(*modules: str) -> Callable[[], Optional[str]]:
    """Probe factory: usable when a device is present and every module imports."""

    def probe() -> Optional[str]:
        return needs_cuda() or first_missing(modules)

    return probe


@dataclass(frozen=True)
class Backend:
    """One implementation of an operator, and every fact about it: how to build it, whether it can
    run here (`probe`, `vendors`), whether it is timed, and whether it is trusted to run in the
    sweep's own process. `build(case, inputs)` returns a zero-argument callable."""

    name: str
    build: Callable[[Case, dict], Callable[[], Any]]
    probe: Callable[[], Optional[str]] = needs_cuda
    timed: bool = True  # False: correctness reference only, never timed as a contender
    vendors: Sequence[str] = ("nvidia",)
    # PyTorch's own operators (and the vendor libraries behind them) are shipped and tested with
    # PyTorch: `bench.isolate=auto` runs them in-process; everything else in a child process.
    trusted: bool = False
    # What it implements: the case dtypes (empty: all) and any other limit (`case -> reason or None`,
    # e.g. a published example that takes only equal lengths); a case outside gives a `skipped` row.
    dtypes: Sequence[str] = ()
    supports: Optional[Callable[[Case], Optional[str]]] = None

    def refuses(self, case: Case) -> Optional[str]:
        """Why this backend does not implement a case, or None."""
        dtype = case.get("dtype")
        if self.dtypes and dtype is not None and dtype not in self.dtypes:
            return f"{self.name} implements dtype {', '.join(self.dtypes)}, not {dtype}"
        return self.supports(case) if self.supports else None

    def unavailable_on(self, hw: Mapping) -> Optional[str]:
        """Why this backend cannot exist on a hardware profile (vendor, profile's exclusions), or None."""
        if hw.get("vendor") not in self.vendors:
            return f"not available on {hw.get('vendor')} hardware"
        if self.name in (hw.get("backends_unavailable") or []):
            return f"not available on {hw.get('name')}"
        return None


@dataclass(frozen=True)
class Experiment:
    name: str
    cases: Callable[[Any], list]
    make_inputs: Callable[[Case, int, str], dict]
    reference: Callable[[Case, dict], Any]
    flops: Callable[[Case], float]
    bytes: Callable[[Case], float]
    backends: Sequence[Backend]
    baseline: str
    check: Optional[Callable[[Case, dict, Any, Any], dict]] = None
    validate_case: Optional[Callable[[Case], None]] = None
    reported: Optional[Callable[[Any], list]] = None
    flops_dtype: Callable[[Case], str] = field(default=lambda case: case.get("dtype", "fp16"))
    prepare: Optional[Callable[[list, list], None]] = None  # (cases, backends): compile/tune before timing
    sources: Sequence[str] = ()  # extra files whose change invalidates stored results
    # Tables a backend's run produces beside its row (e.g. a training run's loss curve):
    # (case, backend, inputs after the gate) -> {table name: [row dicts]}; the runner stores them
    # under results/<hardware>/artifacts/<experiment>.<name>.csv, keyed by case and backend.
    artifacts: Optional[Callable[[Case, str, dict], dict]] = None
    # Which schedule the TileLang kernel takes for a case without a search: 'cached' (an earlier
    # search's winner) or 'default' (the kernel's own table); the quick scoreboard prints it.
    schedule: Optional[Callable[[Case], str]] = None

    def __post_init__(self):
        names = [b.name for b in self.backends]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"experiment {self.name}: backend names registered twice: {sorted(dupes)}")

    @property
    def backend_names(self) -> list[str]:
        return [b.name for b in self.backends]

    def backend(self, name: str) -> Backend:
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)


def known_experiments() -> list[str]:
    """The registry is the config folder: one `configs/experiment/<name>.yaml` per experiment."""
    return sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def load_experiment(name: str) -> Experiment:
    if name not in known_experiments():
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(known_experiments())}")
    module = importlib.import_module(f"experiments.{name}")
    return module.EXPERIMENT


def config_section(cfg, key: str) -> dict:
    """One section of a run's config as plain Python data (from an OmegaConf config or a dict)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg[key])
