"""Recipes as data: configs/baselines.yaml -> typed, validated settings, and each recipe's hash.

A recipe's hash covers everything that changes what gets built (the recipe's own fields, the
repositories and commits it reads, the target arch, Python, torch and CUDA versions), never
where the sources came from: the same commit from a clone or from an archive builds the same.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "configs" / "baselines.yaml"
KINDS = ("wheel", "tree", "pip")
TOOLS = ("nvcc", "g++", "ninja", "git")
# The fields that change what a build produces (descriptions and estimates do not).
BUILD_FIELDS = ("name", "kind", "repo", "subdir", "submodules", "patches", "env", "packages")


class ConfigError(ValueError):
    """A recipe or override that cannot be used; the message is one line naming the key."""


@dataclass(frozen=True)
class Repo:
    name: str
    url: str
    commit: str
    ref: str = ""
    paths: tuple[str, ...] = ()  # only these paths of the tree (empty: all of it)

    @property
    def short(self) -> str:
        return self.commit[:7]


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str
    title: str = ""
    repo: Optional[str] = None
    subdir: str = "."
    submodules: dict = field(default_factory=dict)  # path in the tree -> repo name
    patches: tuple = ()  # ({file, replace: {old: new}}, ...)
    env: dict = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    archs: tuple[str, ...] = ()  # empty: any
    packages: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    built: str = ""
    provides: str = ""
    backends: dict = field(default_factory=dict)  # experiment -> [backend keys]
    expect_min: Optional[float] = None
    # Recipes that install the same modules (fa3 and fa3_bwd: flash_attn_interface): never on the
    # path together; `use` picks one (cache.activate). Symmetric once parsed.
    conflicts: tuple[str, ...] = ()


@dataclass
class Settings:
    cache_dir: Path
    repos: dict[str, Repo]
    recipes: dict[str, Recipe]
    sources: dict[str, str] = field(default_factory=dict)
    sources_dir: Optional[Path] = None
    only: list[str] = field(default_factory=list)
    arch: str = "auto"
    fallback_arch: str = "90"
    jobs: str = "auto"
    fetch_timeout_s: float = 900
    step_timeout_s: float = 3600
    use: list[str] = field(default_factory=list)  # of conflicting recipes, the ones a run activates

    def selected(self) -> list[Recipe]:
        names = self.only or list(self.recipes)
        return [self.recipes[name] for name in names]


def default_cache_dir(configured: Optional[str] = None) -> Path:
    """The key if set, else $REPRO_BASELINES, else $REPRO_CACHE/baselines, else ~/.cache/..."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("REPRO_BASELINES"):
        return Path(os.environ["REPRO_BASELINES"]).expanduser()
    if os.environ.get("REPRO_CACHE"):
        return Path(os.environ["REPRO_CACHE"]).expanduser() / "baselines"
    return Path.home() / ".cache" / "tilelang-repro" / "baselines"


def load_settings(config: Optional[Path] = None, overrides: tuple[str, ...] = ()) -> Settings:
    """Read the config, apply `key=value` overrides (with or without `baselines.`), validate."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(config) if config else DEFAULT_CONFIG
    try:
        cfg = OmegaConf.load(path)
        dotted = [o if o.startswith("baselines.") else f"baselines.{o}" for o in overrides]
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotted))
        data = OmegaConf.to_container(cfg, resolve=True)
    except (OmegaConfBaseException, OSError, ValueError) as err:
        raise ConfigError(f"{path}: {str(err).splitlines()[0]}") from None
    return parse_settings(data.get("baselines") or {})


def parse_settings(data: dict) -> Settings:
    known = {"cache_dir", "sources", "sources_dir", "only", "arch", "fallback_arch", "jobs",
             "fetch_timeout_s", "step_timeout_s", "repos", "recipes", "use"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"baselines.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
    repos = {name: _repo(name, spec) for name, spec in (data.get("repos") or {}).items()}
    recipes = {name: _recipe(name, spec, repos) for name, spec in (data.get("recipes") or {}).items()}
    recipes = _symmetric_conflicts(recipes)
    use = _as_list(data.get("use"))
    check_use(use, recipes, "baselines.use", every_group=True)
    only = _as_list(data.get("only"))
    for name in only:
        if name not in recipes:
            raise ConfigError(f"baselines.only: unknown baseline {name!r} (known: {', '.join(recipes)})")
    sources = {str(k): str(v) for k, v in (data.get("sources") or {}).items()}
    for key in sources:
        if key not in recipes and key not in repos:
            raise ConfigError(f"baselines.sources.{key}: neither a baseline nor a repository of the config")
    return Settings(
        cache_dir=default_cache_dir(data.get("cache_dir")),
        repos=repos, recipes=recipes, sources=sources, only=only, use=use,
        sources_dir=Path(data["sources_dir"]).expanduser() if data.get("sources_dir") else None,
        arch=str(data.get("arch", "auto")), fallback_arch=str(data.get("fallback_arch", "90")),
        jobs=str(data.get("jobs", "auto")),
        fetch_timeout_s=float(data.get("fetch_timeout_s", 900)),
        step_timeout_s=float(data.get("step_timeout_s", 3600)),
    )


def _symmetric_conflicts(recipes: dict[str, Recipe]) -> dict[str, Recipe]:
    for name, recipe in recipes.items():
        for other in recipe.conflicts:
            if other not in recipes or other == name:
                raise ConfigError(f"baselines.recipes.{name}.conflicts: {other!r} is not another recipe")
    return {name: replace(recipe, conflicts=tuple(sorted(
        {*recipe.conflicts, *(other for other, r in recipes.items() if name in r.conflicts)})))
        for name, recipe in recipes.items()}


def conflict_groups(conflicts: dict[str, Any]) -> list[set[str]]:
    """Recipe name -> names it conflicts with  =>  the groups of which at most one is active."""
    groups: list[set[str]] = []
    for name, others in conflicts.items():
        linked = {name, *others}
        if len(linked) < 2:
            continue
        touching = [g for g in groups if g & linked]
        for g in touching:
            groups.remove(g)
            linked |= g
        groups.append(linked)
    return groups


def check_use(use: list[str], recipes: dict[str, Recipe], key: str, every_group: bool = False) -> None:
    """`use` names known recipes, at most one per conflict group (and, for the config, one in each)."""
    for name in use:
        if name not in recipes:
            raise ConfigError(f"{key}: unknown baseline {name!r} (known: {', '.join(recipes)})")
    for group in conflict_groups({name: r.conflicts for name, r in recipes.items()}):
        picked = [name for name in use if name in group]
        if len(picked) > 1:
            raise ConfigError(f"{key}: {' and '.join(picked)} install the same modules; name one of them")
        if every_group and not picked:
            raise ConfigError(f"{key}: name one of {', '.join(sorted(group))} (they install the same modules)")


def _as_list(value: Any) -> list[str]:
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(item) for item in value]


def _repo(name: str, spec: dict) -> Repo:
    for key in ("url", "commit"):
        if not spec.get(key):
            raise ConfigError(f"baselines.repos.{name}.{key}: required")
    commit = str(spec["commit"])
    if len(commit) != 40 or any(c not in "0123456789abcdef" for c in commit):
        raise ConfigError(f"baselines.repos.{name}.commit: a full 40-hex commit, not {commit!r}")
    return Repo(name=name, url=str(spec["url"]), commit=commit, ref=str(spec.get("ref", "")),
                paths=tuple(_as_list(spec.get("paths"))))


def _recipe(name: str, spec: dict, repos: dict[str, Repo]) -> Recipe:
    fields = set(Recipe.__dataclass_fields__) - {"name"}
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise ConfigError(f"baselines.recipes.{name}.{unknown[0]}: unknown key")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"baselines.recipes.{name}.kind: one of {', '.join(KINDS)}, not {kind!r}")
    if kind in ("wheel", "tree") and spec.get("repo") not in repos:
        raise ConfigError(f"baselines.recipes.{name}.repo: {spec.get('repo')!r} is not in baselines.repos")
    for path, repo in (spec.get("submodules") or {}).items():
        if repo not in repos:
            raise ConfigError(f"baselines.recipes.{name}.submodules.{path}: {repo!r} is not in baselines.repos")
    if kind == "pip" and not spec.get("packages"):
        raise ConfigError(f"baselines.recipes.{name}.packages: required for kind pip")
    bad = [tool for tool in _as_list(spec.get("needs")) if tool not in TOOLS and not tool.startswith("python:")]
    if bad:
        raise ConfigError(f"baselines.recipes.{name}.needs: {bad[0]!r} (known: {', '.join(TOOLS)}, python:<module>)")
    for patch in spec.get("patches") or ():
        if not isinstance(patch, dict) or not patch.get("file") or not isinstance(patch.get("replace"), dict):
            raise ConfigError(f"baselines.recipes.{name}.patches: each needs `file` and a `replace` mapping")
    tuples = {key: tuple(_as_list(spec.get(key))) for key in ("needs", "archs", "packages", "imports", "files",
                                                               "conflicts")}
    return Recipe(
        name=name, kind=kind, title=str(spec.get("title", name)), repo=spec.get("repo"),
        subdir=str(spec.get("subdir", ".")), submodules=dict(spec.get("submodules") or {}),
        patches=tuple(spec.get("patches") or ()), env={k: str(v) for k, v in (spec.get("env") or {}).items()},
        built=str(spec.get("built", "")), provides=str(spec.get("provides", "")),
        backends={k: list(v) for k, v in (spec.get("backends") or {}).items()},
        expect_min=spec.get("expect_min"), **tuples,
    )


def repos_of(recipe: Recipe, settings: Settings) -> list[Repo]:
    names = ([recipe.repo] if recipe.repo else []) + list(recipe.submodules.values())
    return [settings.repos[name] for name in names]


def recipe_hash(recipe: Recipe, settings: Settings, toolchain: dict) -> str:
    """16 hex digits over what decides the build's result (not where the sources came from)."""
    payload = {
        "recipe": {key: value for key, value in asdict(recipe).items() if key in BUILD_FIELDS},
        "repos": [asdict(repo) for repo in repos_of(recipe, settings)],
        "toolchain": toolchain,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
