"""Baselines a user can get: fetch and build every comparator the claims name, pinned, into a
cache outside the repository, and let the experiments find them there at run time.

    python -m repro.baselines [--dry-run] [--force] [key=value ...]     (or: make baselines)

Recipes are data (configs/baselines.yaml): repository and pinned commit, or registry version,
build flags, what it provides, which experiments' backends it enables. Kinds: `wheel` (built
from source: FlashAttention-2 and -3, forward-only and with their backward, FlashMLA, DeepGEMM),
`tree` (TileLang's published examples at a pinned commit, loaded at run time, never copied
here), `pip` (FlashInfer, FlashAttention-4, cuDNN's frontend). Every one is optional and
idempotent (a recipe hash stamp); offline, each takes a local clone, source archive or built
wheel.

For the rest of the suite:
    built_baselines(cache_dir) -> list[dict]   what was built
    in_use(cache_dir) -> dict                  the usable, active builds (for the run manifest)
    activate(cache_dir)                        put built packages on sys.path (of builds of the same
                                               modules, e.g. fa3 / fa3_bwd, the one `use` picks)
    import_from(name, module)                  import a module from one baseline's install
    upstream_example(path) -> module           a TileLang example file from the cached checkout
    upstream_missing(path), why_unusable(name) probes: None, or the one-line reason to skip

Files: recipes.py (config -> Settings, recipe hash), sources.py (clones, archives, fetch),
toolchain.py (nvcc, g++, ninja, arch), build.py (steps, records), plan.py (--dry-run),
progress.py (display, logged subprocesses), cache.py (stamps, activate), upstream.py (examples).
"""
from repro.baselines.cache import activate, built_baselines, import_from, in_use, usable, why_unusable
from repro.baselines.recipes import ConfigError, default_cache_dir, load_settings
from repro.baselines.upstream import UpstreamUnavailable, upstream_example, upstream_missing

__all__ = [
    "ConfigError", "UpstreamUnavailable", "activate", "built_baselines", "default_cache_dir",
    "import_from", "in_use", "load_settings", "upstream_example", "upstream_missing", "usable", "why_unusable",
]
