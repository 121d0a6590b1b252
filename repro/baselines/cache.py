"""The cache of built baselines, and how the rest of the suite reads it.

Layout under the cache folder (default ~/.cache/tilelang-repro/baselines):

    sources/<repo>-<commit7>/   pinned trees, shared between recipes (fa2 and fa3 read one)
    <name>/stamp.json           the record of the last build: recipe hash, status, steps, times
    <name>/build/               the build's working copy (kept: an interrupted build resumes)
    <name>/dist/*.whl           the built wheel (small enough to carry to another machine)
    <name>/site/                the installed package, importable once activate() has run
    <name>/tree/                kind `tree`: the checked-out files (TileLang's examples)
    <name>/build.log            the build's full output
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Optional

from repro.baselines.recipes import default_cache_dir

STAMP = "stamp.json"
GOOD = ("ok",)
LOCAL_KEYS = ("site", "site_extra", "tree", "wheel", "log")  # folders of this machine


def cache_root(cache_dir: Optional[os.PathLike] = None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def read_stamp(folder: Path) -> Optional[dict]:
    try:
        return json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return None


def write_stamp(folder: Path, record: dict) -> None:
    """Atomic: a reader never sees half a record."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (STAMP + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, folder / STAMP)


def built_baselines(cache_dir: Optional[os.PathLike] = None) -> list[dict]:
    """Every baseline the cache holds a record of, by name: name, title, kind, status
    (ok | failed | skipped), version, repo/ref/commit, submodules, packages, source (how the
    tree was had: an archive's or clone's name, or the fetch URL), built (what was compiled:
    head dims, dtypes, arch), env (build flags), patches, recipe_hash, toolchain (python,
    torch, CUDA, arch), steps (step, seconds, status), seconds, finished (UTC), error.
    For the run manifest: no folder of this machine is in it; keep `status == "ok"` for the
    baselines that can be used."""
    return [{k: v for k, v in record.items() if k not in LOCAL_KEYS} for record in _records(cache_dir)]


def _records(cache_dir: Optional[os.PathLike] = None) -> list[dict]:
    root = cache_root(cache_dir)
    if not root.is_dir():
        return []
    records = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "sources"):
        record = read_stamp(folder)
        if record and record.get("name") == folder.name:
            records.append(record)
    return records


def usable(name: str, cache_dir: Optional[os.PathLike] = None) -> Optional[dict]:
    """The record of a built, usable baseline, or None."""
    record = read_stamp(cache_root(cache_dir) / name)
    if not record or record.get("status") not in GOOD:
        return None
    path = record.get("site") or record.get("tree")
    return record if path and Path(path).is_dir() else None


def why_unusable(name: str, cache_dir: Optional[os.PathLike] = None) -> str:
    """One line for a `skipped` row: why this baseline cannot be used here."""
    root = cache_root(cache_dir)
    record = read_stamp(root / name)
    if record is None:
        return f"baseline {name} not built (make baselines, or python -m repro.baselines baselines.only=[{name}]; cache {root})"
    if record.get("status") not in GOOD:
        return f"baseline {name} {record.get('status')}: {record.get('error') or 'see ' + str(root / name / 'build.log')}"
    return f"baseline {name}: its files under {root / name} are gone; rebuild with make baselines"


def activate(cache_dir: Optional[os.PathLike] = None) -> list[str]:
    """Put every usable built package of the cache on sys.path (after the entries already
    there, so an installed copy wins); returns the folders added. Idempotent."""
    added = []
    for record in _records(cache_dir):
        if record.get("status") not in GOOD:
            continue
        for site in (record.get("site"), record.get("site_extra")):
            if site and Path(site).is_dir() and site not in sys.path:
                sys.path.append(site)
                added.append(site)
    if added:
        importlib.invalidate_caches()
        # Child processes (isolated measurements, launcher workers) find them too.
        paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        os.environ["PYTHONPATH"] = os.pathsep.join(paths + [a for a in added if a not in paths])
    return added


def import_from(name: str, module: str, cache_dir: Optional[os.PathLike] = None):
    """Import `module` from baseline `name`'s own install, even where another baseline ships a
    package of the same top-level name (flash-attn-4's `flash_attn/cute` is a portion of a
    namespace that the FlashAttention-2 package claims as a regular package)."""
    record = usable(name, cache_dir)
    if record is None or not record.get("site"):
        raise ImportError(why_unusable(name, cache_dir))
    site = record["site"]
    if site not in sys.path:
        sys.path.append(site)
        importlib.invalidate_caches()
    top = module.split(".")[0]
    portion = os.path.join(site, top)
    if "." in module and os.path.isdir(portion):
        package = importlib.import_module(top)
        paths = getattr(package, "__path__", None)
        if isinstance(paths, list) and portion not in paths:
            paths.insert(0, portion)  # this baseline's submodules first
    return importlib.import_module(module)
