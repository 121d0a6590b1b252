"""Probes for the baselines `make baselines` builds (docs/baselines.md), shared by the experiments.

Not an experiment. `tilelang_upstream` is TileLang's own published example kernels (the
artifacts its claims were made with), imported at run time from the baselines cache by their
path in the TileLang repository, never copied here; each experiment's `build_tilelang_upstream`
adapts its inputs to the example's layout outside the timed call and declares, through
`Backend(supports=..., dtypes=...)`, the cases the example does not implement (`skipped` rows).
An output the example does not compute (an LSE) is returned as `NotReturned(why)`: the gate then
compares the others and says so in the row's `error` column.

The registry and source-built baselines (FlashMLA, FlashInfer, ...) install into the cache's
own site folders; `baseline_probe` puts those on the path before it tries the import.
`baseline_module` imports from one baseline's own site first, for a package that shares its
top-level name with another's (FlashAttention-4's `flash_attn.cute` beside FlashAttention-2).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from repro.measure.experiment import first_missing, needs_cuda
from repro.measure.gate import NotReturned

NAME = "tilelang_upstream"
MLA_DECODE = "examples/deepseek_mla/example_mla_decode.py"
SPARSE_MLA = "examples/deepseek_v32/sparse_mla_fwd_pipelined.py"
SPARSE_MLA_BWD = "examples/deepseek_v32/sparse_mla_bwd.py"
INDEXER = "examples/deepseek_v32/fp8_lighting_indexer.py"
TOPK = "examples/deepseek_v32/topk_selector.py"
FLASH_ATTENTION = "examples/flash_attention/example_mha_fwd_bshd.py"
FLASH_ATTENTION_GQA = "examples/flash_attention/example_gqa_fwd_bshd.py"

__all__ = ["NAME", "NotReturned", "baseline_module", "baseline_module_probe", "baseline_probe", "compiled",
           "example", "import_problem", "upstream_probe"]


def example(path: str):
    """The example module (imported once per process)."""
    from repro.baselines import upstream_example

    return upstream_example(path)


def import_problem(path: str) -> Optional[str]:
    """None when the example imports, else why not (a dependency of it missing, say)."""
    from repro.baselines import UpstreamUnavailable

    try:
        example(path)
    except UpstreamUnavailable as err:
        return str(err)
    return None


def upstream_probe(*paths: str) -> Callable[[], Optional[str]]:
    """Probe of a `tilelang_upstream` backend: a device, and each example it uses in the cache and
    importable."""

    def probe() -> Optional[str]:
        from repro.baselines import upstream_missing

        reason = needs_cuda()
        for path in paths:
            reason = reason or upstream_missing(path) or import_problem(path)
        return reason

    return probe


def baseline_probe(name: str, module: str, attrs: Sequence[str] = (),
                   capability: Sequence[int] = ()) -> Callable[[], Optional[str]]:
    """Probe of a package that `make baselines` may have built into the cache (baseline `name`):
    a device (of a compute capability major in `capability`, when given), then `module`
    importable from the installed packages or the cache, with every attribute in `attrs`."""

    def probe() -> Optional[str]:
        reason = needs_cuda()
        if reason:
            return reason
        import importlib

        import torch

        major = torch.cuda.get_device_capability()[0]
        if capability and major not in capability:
            return f"{name} runs on compute capability {'/'.join(f'{c}.x' for c in capability)}, not {major}.x"
        from repro.baselines import activate

        activate()  # the cache's built packages on sys.path (after installed ones); idempotent
        missing = first_missing((module,))
        if missing:
            return f"{missing}; `make baselines` builds it (baseline {name})"
        absent = [a for a in attrs if not hasattr(importlib.import_module(module), a)]
        return f"{module} has no {', '.join(absent)} (an older {name}?)" if absent else None

    return probe


def baseline_module(name: str, module: str):
    """`module` from baseline `name`'s own install in the cache (`import_from`: its portion of a
    top-level package that another baseline also ships comes first), else as installed here.
    ImportError, saying why, when neither imports."""
    import importlib

    from repro.baselines import import_from

    try:
        return import_from(name, module)
    except Exception as cached:  # not built, or built but broken: an installed copy may do
        try:
            return importlib.import_module(module)
        except Exception:
            raise ImportError(f"{module} not importable: {cached}") from cached


def baseline_module_probe(name: str, module: str, attrs: Sequence[str] = ()) -> Callable[[], Optional[str]]:
    """Probe of a backend that imports through `baseline_module`: a device, `module` importable
    (from the cache or installed), with every attribute in `attrs`."""

    def probe() -> Optional[str]:
        reason = needs_cuda()
        if reason:
            return reason
        try:
            found = baseline_module(name, module)
        except ImportError as err:
            return str(err)
        absent = [a for a in attrs if not hasattr(found, a)]
        return f"{module} has no {', '.join(absent)} (an older {name}?)" if absent else None

    return probe


_COMPILED: dict = {}


def compiled(key: tuple, make: Callable):
    """`make()` once per key and process: a backend is built again for every correctness trial."""
    if key not in _COMPILED:
        _COMPILED[key] = make()
    return _COMPILED[key]
