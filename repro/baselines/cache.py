"""The cache of built baselines, and how the rest of the suite reads it.

Layout under the cache folder (default ~/.cache/tilelang-repro/baselines):

    sources/<repo>-<commit7>/   pinned trees, shared between recipes (fa2 and fa3 read one)
    <name>/stamp.json           the record of the last build: recipe hash, status, steps, times
    <name>/build/               the build's working copy (kept: an interrupted build resumes)
    <name>/dist/*.whl           the built wheel (small enough to carry to another machine)
    <name>/site/                the installed package, importable once activate() has run
    <name>/tree/                kind `tree`: the checked-out files (TileLang's examples)
    <name>/build.log            the build's full output

Recipes that install the same modules (`conflicts`: fa3 and fa3_bwd both install
flash_attn_interface) are never put on the path together: activate() takes, of each such group
that has more than one usable build, the one `use` names: $REPRO_BASELINES_USE (comma-separated,
e.g. `fa3_bwd`) first, then the config's `baselines.use`.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Optional

from repro.baselines.recipes import default_cache_dir

USE_ENV = "REPRO_BASELINES_USE"
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


def built_baselines(cache_dir: Optional[os.PathLike] = None, use: Optional[list[str]] = None) -> list[dict]:
    """Every baseline the cache holds a record of, by name: name, title, kind, status
    (ok | failed | skipped), version, repo/ref/commit, submodules, packages, source (how the
    tree was had: an archive's or clone's name, or the fetch URL), built (what was compiled:
    head dims, dtypes, arch), env (build flags), patches, recipe_hash, toolchain (python,
    torch, CUDA, arch), steps (step, seconds, status), seconds, finished (UTC), error, and
    active (whether activate() puts it on the path: false for a usable build that a
    conflicting one displaces, see `use`).
    For the run manifest: no folder of this machine is in it; keep `status == "ok"` (and
    `active`) for the baselines that can be used."""
    records = _records(cache_dir)
    on = active_names(records, use)
    return [{**{k: v for k, v in record.items() if k not in LOCAL_KEYS}, "active": record["name"] in on}
            for record in records]


def in_use(cache_dir: Optional[os.PathLike] = None) -> dict[str, str]:
    """For a run manifest: each baseline a run can use (built ok, and active), by name, as
    "version commit; what was built"."""
    return {r["name"]: f"{r.get('version') or ''} {(r.get('commit') or '')[:12]}; {r.get('built', '')}".strip(" ;")
            for r in built_baselines(cache_dir) if r.get("status") == "ok" and r.get("active", True)}


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
    return record if _usable(record) else None


def _usable(record: Optional[dict]) -> bool:
    if not record or record.get("status") not in GOOD:
        return False
    path = record.get("site") or record.get("tree")
    return bool(path) and Path(path).is_dir()


def why_unusable(name: str, cache_dir: Optional[os.PathLike] = None) -> str:
    """One line for a `skipped` row: why this baseline cannot be used here."""
    root = cache_root(cache_dir)
    record = read_stamp(root / name)
    if record is None:
        return f"baseline {name} not built (make baselines, or python -m repro.baselines baselines.only=[{name}]; cache {root})"
    if record.get("status") not in GOOD:
        return f"baseline {name} {record.get('status')}: {record.get('error') or 'see ' + str(root / name / 'build.log')}"
    return f"baseline {name}: its files under {root / name} are gone; rebuild with make baselines"


def preferred(use: Optional[list[str]] = None) -> list[str]:
    """Of conflicting builds, the names to activate, in order of precedence: `use` when given,
    else $REPRO_BASELINES_USE then the config's `baselines.use` (every group named there)."""
    if use is not None:
        return list(use)
    from repro.baselines.recipes import check_use, load_settings

    settings = load_settings()
    env = env_use()
    check_use(env, settings.recipes, USE_ENV)
    return env + settings.use


def env_use() -> list[str]:
    """$REPRO_BASELINES_USE as a list of names."""
    return [name.strip() for name in os.environ.get(USE_ENV, "").split(",") if name.strip()]


def active_names(records: list[dict], use: Optional[list[str]] = None) -> set[str]:
    """The usable records activate() puts on the path: all of them, except that of each group
    of conflicting builds (the records' `conflicts`, either side) only the first one named in
    preferred(use) stays; a group with several builds and none named stays off entirely."""
    from repro.baselines.recipes import conflict_groups

    names = {r["name"] for r in records if _usable(r)}
    groups = [g & names for g in conflict_groups({r["name"]: r.get("conflicts") or () for r in records})]
    clashing = [g for g in groups if len(g) > 1]
    if not clashing:
        return names
    order = preferred(use)
    for group in clashing:
        names -= group
        picked = next((name for name in order if name in group), None)
        if picked:
            names.add(picked)
    return names


def activate(cache_dir: Optional[os.PathLike] = None, use: Optional[list[str]] = None) -> list[str]:
    """Put every usable built package of the cache on sys.path (after the entries already
    there, so an installed copy wins); returns the folders added. Idempotent. Of builds that
    install the same modules, only the one `use` picks (see active_names)."""
    added = []
    records = _records(cache_dir)
    on = active_names(records, use)
    for record in records:
        if record.get("status") not in GOOD or record["name"] not in on:
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
    for other in _records(cache_dir):
        if other["name"] in (record.get("conflicts") or ()) or name in (other.get("conflicts") or ()):
            if other.get("site") in sys.path:
                raise ImportError(f"baseline {name}: {other['name']}, which installs the same modules, is already "
                                  f"on the path (pick one with {USE_ENV} or baselines.use)")
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
