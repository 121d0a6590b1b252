"""What `make baselines` would do, without doing it: per baseline, reuse / build / skip, from
where, with which flags, and how long it should take (the last build's own time where the
cache has one, else the recipe's rough `expect_min`)."""
from __future__ import annotations

from typing import Optional

from repro.baselines.build import blocked, build_env_vars, resolve_arch, reusable
from repro.baselines.cache import USE_ENV, env_use, read_stamp
from repro.baselines.progress import fmt_seconds
from repro.baselines.recipes import Recipe, Settings, recipe_hash
from repro.baselines.sources import SourceError, describe, local_source
from repro.baselines.toolchain import toolchain_key


def plan_entry(recipe: Recipe, settings: Settings, arch: str) -> dict:
    stamp = read_stamp(settings.cache_dir / recipe.name)
    rhash = recipe_hash(recipe, settings, toolchain_key(recipe.kind, arch))
    stop = blocked(recipe, arch)
    if reusable(stamp, rhash):
        action, seconds = "reuse", 0.0
    elif stop:
        action, seconds = f"{'skip' if stop[0] == 'skipped' else 'fail'}: {stop[1]}", 0.0
    else:
        action, seconds = "build", expected_seconds(recipe, stamp)
    return {"name": recipe.name, "kind": recipe.kind, "action": action, "hash": rhash,
            "seconds": seconds, "estimated": not (stamp and stamp.get("status") == "ok"),
            "sources": source_lines(recipe, settings)}


def expected_seconds(recipe: Recipe, stamp: Optional[dict]) -> Optional[float]:
    if stamp and stamp.get("status") == "ok" and stamp.get("seconds"):
        return float(stamp["seconds"])
    return recipe.expect_min * 60 if recipe.expect_min is not None else None


def source_lines(recipe: Recipe, settings: Settings) -> list[str]:
    if recipe.kind == "pip":
        where = settings.sources.get(recipe.name)
        return [f"{' '.join(recipe.packages)} from {'wheels ' + where if where else 'the package registry'}"]
    lines = []
    pairs = [(".", recipe.repo, recipe.name)] + [(path, name, None) for path, name in recipe.submodules.items()]
    for path, name, baseline in pairs:
        repo = settings.repos[name]
        try:
            origin = describe(repo, local_source(repo, settings, baseline))
        except SourceError as err:
            origin = f"ERROR {err}"
        prefix = "" if path == "." else f"{path}: "
        lines.append(f"{prefix}{repo.name} @ {repo.short} ({repo.ref}) from {origin}")
    return lines


def render_plan(settings: Settings) -> list[str]:
    arch, origin = resolve_arch(settings)
    lines = [f"baselines cache: {settings.cache_dir}", f"target: sm_{arch} ({origin})"]
    entries = [plan_entry(recipe, settings, arch) for recipe in settings.selected()]
    for entry, recipe in zip(entries, settings.selected()):
        lines.append(f"  {entry['name']:<18} {entry['kind']:<6} {entry['action']}  [recipe {entry['hash']}]")
        lines += [f"      source   {line}" for line in entry["sources"]]
        if recipe.built:
            lines.append(f"      builds   {recipe.built.replace('{arch}', arch)}")
        env = build_env_vars(recipe, settings, arch)
        if env:
            lines.append("      env      " + " ".join(f"{k}={v}" for k, v in env.items()))
        if recipe.patches:
            lines.append("      patches  " + ", ".join(p["file"] for p in recipe.patches))
        backends = "; ".join(f"{exp}: {', '.join(keys)}" for exp, keys in recipe.backends.items())
        lines.append(f"      enables  {backends}")
        if recipe.conflicts:
            group = {recipe.name, *recipe.conflicts}
            pick = next((name for name in env_use() + settings.use if name in group), "neither")
            lines.append(f"      conflicts {', '.join(recipe.conflicts)} (same modules); where both are built, "
                         f"runs use {pick} (baselines.use, {USE_ENV})")
    lines.append(estimate_line(entries))
    return lines


def estimate_line(entries: list[dict]) -> str:
    todo = [e for e in entries if e["action"] == "build"]
    if not todo:
        return "expected: nothing to build (everything reused or skipped)"
    known = [e for e in todo if e["seconds"] is not None]
    total = sum(e["seconds"] for e in known)
    parts = ", ".join(f"{e['name']} {'~' if e['estimated'] else ''}{fmt_seconds(e['seconds'])}" for e in known)
    unknown = [e["name"] for e in todo if e["seconds"] is None]
    rough = " (~ marks a rough guess; a build here records its own time)" if any(e["estimated"] for e in known) else ""
    tail = f"; unknown for {', '.join(unknown)}" if unknown else ""
    return f"expected: about {fmt_seconds(total)} to build {len(todo)} baseline(s): {parts}{tail}{rough}"
