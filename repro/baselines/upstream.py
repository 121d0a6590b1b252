"""Loading TileLang's published example kernels from the cached checkout at run time.

They are never copied into this repository: `make baselines` checks out the pinned commit's
examples/ into the cache, and experiments import a file from there by its path in the
upstream repository, e.g. `upstream_example("examples/deepseek_mla/example_mla_decode.py")`.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Optional

from repro.baselines.cache import cache_root, usable, why_unusable

NAME = "tilelang_upstream"
_LOADED: dict[str, object] = {}


class UpstreamUnavailable(ImportError):
    """The example cannot be loaded; the message says why (a probe's `skipped` reason)."""


def upstream_root(cache_dir: Optional[os.PathLike] = None) -> Path:
    record = usable(NAME, cache_dir)
    if record is None:
        raise UpstreamUnavailable(why_unusable(NAME, cache_dir))
    return Path(record["tree"])


def upstream_missing(path: str, cache_dir: Optional[os.PathLike] = None) -> Optional[str]:
    """Probe: None when the example file is there, else why not (never raises)."""
    try:
        file = upstream_root(cache_dir) / path
    except UpstreamUnavailable as err:
        return str(err)
    return None if file.is_file() else f"{path} is not in the cached TileLang checkout ({file.parent})"


def upstream_example(path: str, cache_dir: Optional[os.PathLike] = None):
    """Import one example file of the cached TileLang checkout as a module (once per path).

    Its own folder goes first on sys.path while it loads, so the file's imports of its
    neighbours (`from utils import ...`) find the upstream files, not this suite's. Nothing
    under `if __name__ == "__main__":` runs."""
    key = str(cache_root(cache_dir) / path)
    if key in _LOADED:
        return _LOADED[key]
    reason = upstream_missing(path, cache_dir)
    if reason:
        raise UpstreamUnavailable(reason)
    file = upstream_root(cache_dir) / path
    name = "tilelang_upstream." + path.removesuffix(".py").replace("/", ".").replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    folder = str(file.parent)
    sys.path.insert(0, folder)
    try:
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except Exception as err:
        sys.modules.pop(name, None)
        raise UpstreamUnavailable(f"{path}: import failed: {type(err).__name__}: {err}") from err
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    _LOADED[key] = module
    return module
