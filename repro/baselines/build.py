"""Building the recipes: per-step timing, one record per baseline, one failure never stops the rest.

Steps by kind (each timed, each shown by the progress display):
    wheel  source -> prepare -> compile -> install -> check   (a .whl as the source: install -> check)
    tree   source -> check
    pip    install -> check
A baseline whose stamp has the same recipe hash and status ok is reused without running a step.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from repro.baselines.cache import read_stamp, write_stamp
from repro.baselines.progress import Progress, fmt_seconds, last_line, run_logged, tail
from repro.baselines.recipes import Recipe, Settings, recipe_hash
from repro.baselines.sources import SourceError, local_source, materialize
from repro.baselines.toolchain import (build_path_env, cuda_home, detect_arch, jobs, missing_tools,
                                       toolchain_key)

PREPARED = ".prepared"


class StepFailed(RuntimeError):
    """A step that did not succeed; the message is one line."""


def resolve_arch(settings: Settings) -> tuple[str, str]:
    """(arch, where it came from)."""
    if settings.arch not in ("auto", ""):
        return settings.arch, "baselines.arch"
    found = detect_arch()
    return (found, "nvidia-smi") if found else (settings.fallback_arch, "no GPU found: baselines.fallback_arch")


class Steps:
    """Times each step, records it, shows it."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.items = progress, []

    @contextmanager
    def run(self, name: str, note: str = ""):
        start = time.monotonic()
        try:
            yield
        except Exception:
            self._done(name, start, "failed", note)
            raise
        self._done(name, start, "ok", note)

    def _done(self, name: str, start: float, status: str, note: str) -> None:
        seconds = round(time.monotonic() - start, 2)
        self.progress.clear()
        self.items.append({"step": name, "seconds": seconds, "status": status})
        self.progress.step(name, seconds, status, note)


def base_record(recipe: Recipe, settings: Settings, arch: str, rhash: str) -> dict:
    repo = settings.repos.get(recipe.repo) if recipe.repo else None
    subs = {path: {"repo": settings.repos[name].url, "commit": settings.repos[name].commit}
            for path, name in recipe.submodules.items()}
    return {
        "name": recipe.name, "title": recipe.title, "kind": recipe.kind, "status": "failed",
        "recipe_hash": rhash, "arch": arch, "toolchain": toolchain_key(recipe.kind, arch),
        "repo": repo.url if repo else None, "ref": repo.ref if repo else None,
        "commit": repo.commit if repo else None, "submodules": subs, "packages": list(recipe.packages),
        "built": recipe.built.replace("{arch}", arch), "provides": recipe.provides,
        "backends": recipe.backends, "conflicts": list(recipe.conflicts),
        "env": build_env_vars(recipe, settings, arch),
        "patches": [patch["file"] for patch in recipe.patches], "version": None, "source": None,
        "steps": [], "seconds": 0.0, "error": None,
    }


def build_env_vars(recipe: Recipe, settings: Settings, arch: str) -> dict:
    home = cuda_home()
    values = {"arch": arch, "jobs": jobs(settings.jobs), "cuda_home": home or "/usr/local/cuda",
              "python": sys.executable}
    return {key: value.format(**values) for key, value in recipe.env.items()}


def reusable(stamp: Optional[dict], rhash: str) -> bool:
    if not stamp or stamp.get("status") != "ok" or stamp.get("recipe_hash") != rhash:
        return False
    path = stamp.get("site") or stamp.get("tree")
    return bool(path) and Path(path).is_dir()


def blocked(recipe: Recipe, arch: str) -> Optional[tuple[str, str]]:
    """(status, reason) when the recipe cannot build here at all, else None."""
    if recipe.archs and arch not in recipe.archs:
        return "skipped", f"needs sm_{'/'.join(recipe.archs)}, this GPU is sm_{arch}"
    reason = missing_tools(recipe.needs)
    return ("failed", reason) if reason else None


def build_one(recipe: Recipe, settings: Settings, arch: str, progress: Progress, force: bool = False) -> dict:
    """Build (or reuse) one baseline; returns its record with `outcome` built|reused|failed|skipped."""
    folder = settings.cache_dir / recipe.name
    rhash = recipe_hash(recipe, settings, toolchain_key(recipe.kind, arch))
    progress.start(recipe.name, recipe.title)
    stamp = read_stamp(folder)
    if not force and reusable(stamp, rhash):
        progress.step("reuse", 0, "ok", f"recipe {rhash} built {stamp.get('finished', '?')}")
        return {**stamp, "outcome": "reused"}
    record = base_record(recipe, settings, arch, rhash)
    record["log"] = str(folder / "build.log")
    steps, start = Steps(progress), time.monotonic()
    stop = blocked(recipe, arch)
    try:
        if stop:
            record["status"], record["error"] = stop
        else:
            folder.mkdir(parents=True, exist_ok=True)
            RUNNERS[recipe.kind](recipe, settings, arch, folder, record, steps, progress)
            record["status"] = "ok"
    except (StepFailed, SourceError, OSError, subprocess.SubprocessError) as err:
        record["error"] = str(err).splitlines()[0] if str(err) else type(err).__name__
    record["steps"], record["seconds"] = steps.items, round(time.monotonic() - start, 2)
    record["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_stamp(folder, record)
    if record["status"] != "ok":
        progress.say(f"      {record['status']}: {record['error']}")
    return {**record, "outcome": "built" if record["status"] == "ok" else record["status"]}


def build_all(settings: Settings, progress: Optional[Progress] = None, force: bool = False) -> list[dict]:
    recipes = settings.selected()
    progress = progress or Progress(len(recipes))
    arch, _ = resolve_arch(settings)
    return [build_one(recipe, settings, arch, progress, force) for recipe in recipes]


# --- kind: wheel -------------------------------------------------------------------------

def run_wheel(recipe, settings, arch, folder, record, steps, progress) -> None:
    repo = settings.repos[recipe.repo]
    local = local_source(repo, settings, recipe.name)
    if local is not None and local.suffix == ".whl":
        record["source"] = f"wheel {local}"
        with steps.run("install", local.name):
            install_wheel(local, folder, record)
        return check_imports(recipe, record, steps, settings)
    src = settings.cache_dir / "sources" / f"{repo.name}-{repo.short}"
    with steps.run("source", f"{repo.name} @ {repo.short}"):
        record["source"] = materialize(repo, src, local, settings.fetch_timeout_s)
        subs = fetch_submodules(recipe, settings, src)
    rhash, build = record["recipe_hash"], folder / "build"
    resumed = (build / PREPARED).is_file() and (build / PREPARED).read_text().strip() == rhash
    with steps.run("prepare", "resuming the previous build tree" if resumed else ""):
        if not resumed:
            prepare_tree(src, subs, recipe, build)
            (build / PREPARED).write_text(rhash + "\n")
    dist = folder / "dist"
    with steps.run("compile", f"{jobs(settings.jobs)} jobs, log {folder / 'build.log'}"):
        compile_wheel(recipe, settings, arch, build / recipe.subdir, dist, folder / "build.log", progress)
    wheels = sorted(dist.glob("*.whl"))
    with steps.run("install", wheels[0].name if wheels else ""):
        if not wheels:
            raise StepFailed(f"no wheel in {dist} after the build")
        install_wheel(wheels[0], folder, record)
    check_imports(recipe, record, steps, settings)


def fetch_submodules(recipe: Recipe, settings: Settings, src: Path) -> dict[str, Path]:
    """Trees for the submodule paths the main source left empty (archives and `git archive`
    never hold submodules; a plain folder may)."""
    trees = {}
    for path, name in recipe.submodules.items():
        inside = src / path
        if inside.is_dir() and any(inside.iterdir()):
            continue
        repo = settings.repos[name]
        dest = settings.cache_dir / "sources" / f"{repo.name}-{repo.short}"
        materialize(repo, dest, local_source(repo, settings), settings.fetch_timeout_s)
        trees[path] = dest
    return trees


def prepare_tree(src: Path, subs: dict[str, Path], recipe: Recipe, build: Path) -> None:
    if build.exists():
        shutil.rmtree(build)
    shutil.copytree(src, build, symlinks=True)
    for path, tree in subs.items():
        shutil.copytree(tree, build / path, symlinks=True, dirs_exist_ok=True)
    for patch in recipe.patches:
        file = build / patch["file"]
        text = file.read_text()
        for old, new in patch["replace"].items():
            if old not in text:
                raise StepFailed(f"patch: {patch['file']} has no {old!r} (did the pinned commit change?)")
            text = text.replace(old, new)
        file.write_text(text)


def compile_wheel(recipe, settings, arch, cwd: Path, dist: Path, log: Path, progress) -> None:
    if dist.exists():
        shutil.rmtree(dist)
    dist.mkdir(parents=True)
    env = {**os.environ, **build_path_env(), **build_env_vars(recipe, settings, arch)}
    cmd = [sys.executable, "-m", "pip", "wheel", "-v", "--no-build-isolation", "--no-deps", "--no-index",
           "--disable-pip-version-check", "-w", str(dist), "."]
    code = run_logged(cmd, cwd, env, log, settings.step_timeout_s, progress, "compile")
    if code == 124:
        raise StepFailed(f"build ran past baselines.step_timeout_s={settings.step_timeout_s:.0f} s "
                         f"(rerun: an interrupted build resumes); log {log}")
    if code:
        raise StepFailed(f"build exited {code}: {last_line(log)} (log {log})")


def install_wheel(wheel: Path, folder: Path, record: dict) -> None:
    site = folder / "site"
    if site.exists():
        shutil.rmtree(site)
    try:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    except (zipfile.BadZipFile, OSError) as err:
        raise StepFailed(f"{wheel}: not a readable wheel ({err})") from None
    parts = wheel.name.split("-")
    record.update(site=str(site), wheel=str(wheel), version=parts[1] if len(parts) > 2 else None)


def check_imports(recipe: Recipe, record: dict, steps: Steps, settings: Settings) -> None:
    """Import each module in a fresh interpreter with the baseline's folder on its path; for a
    wheel, first the recipe's `files`, which the installed package must hold (headers that a
    run-time compiler includes, say)."""
    files = recipe.files if recipe.kind == "wheel" else ()
    if not recipe.imports and not files:
        return
    note = "; ".join(part for part in ("import " + ", ".join(recipe.imports) if recipe.imports else "",
                                       f"{len(files)} installed files" if files else "") if part)
    with steps.run("check", note):
        missing = [path for path in files if not (Path(record["site"]) / path).is_file()]
        if missing:
            raise StepFailed(f"the installed package lacks {missing[0]}")
        if not recipe.imports:
            return
        sites = [record[key] for key in ("site", "site_extra") if record.get(key)]
        code = "import sys; sys.path.extend(sys.argv[1:]); " + "; ".join(f"import {m}" for m in recipe.imports)
        try:
            done = subprocess.run([sys.executable, "-c", code, *sites], capture_output=True, text=True,
                                  timeout=min(settings.step_timeout_s, 600), check=False)
        except subprocess.TimeoutExpired:
            raise StepFailed("import check gave no answer within its time limit") from None
        if done.returncode:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise StepFailed(f"import failed: {lines[-1] if lines else done.returncode}")


# --- kind: tree ----------------------------------------------------------------------------

def run_tree(recipe, settings, arch, folder, record, steps, progress) -> None:
    repo = settings.repos[recipe.repo]
    tree = folder / "tree"
    with steps.run("source", f"{repo.name} @ {repo.short}"):
        record["source"] = materialize(repo, tree, local_source(repo, settings, recipe.name), settings.fetch_timeout_s)
        record["tree"], record["version"] = str(tree), repo.commit[:12]
    with steps.run("check", f"{len(recipe.files)} files"):
        missing = [path for path in recipe.files if not (tree / path).is_file()]
        if missing:
            raise StepFailed(f"{repo.name} @ {repo.short} has no {missing[0]}")


# --- kind: pip -----------------------------------------------------------------------------

def run_pip(recipe, settings, arch, folder, record, steps, progress) -> None:
    prefix = folder / "prefix"
    local = settings.sources.get(recipe.name)
    cmd = [sys.executable, "-m", "pip", "install", "--prefix", str(prefix), "--no-warn-script-location",
           "--disable-pip-version-check", "--retries", "0", "--timeout", "20"]
    if local:
        wheels = Path(local).expanduser()
        if not wheels.exists():
            raise SourceError(f"baselines.sources.{recipe.name}: {wheels} does not exist")
        cmd += ["--no-index", "--find-links", str(wheels.parent if wheels.is_file() else wheels)]
        record["source"] = f"wheels {wheels}"
    else:
        record["source"] = "package registry"
    with steps.run("install", " ".join(recipe.packages)):
        if prefix.exists():
            shutil.rmtree(prefix)
        code = run_logged(cmd + list(recipe.packages), folder, dict(os.environ), folder / "build.log",
                          settings.fetch_timeout_s, progress, "install")
        if code:
            raise StepFailed(f"cannot install {' '.join(recipe.packages)} ({last_line(folder / 'build.log')}); "
                             f"offline: baselines.sources.{recipe.name}=FOLDER_OF_WHEELS")
    paths = {key: sysconfig.get_path(key, "posix_prefix", vars={"base": str(prefix), "platbase": str(prefix)})
             for key in ("purelib", "platlib")}
    record["site"] = paths["purelib"]
    if paths["platlib"] != paths["purelib"] and Path(paths["platlib"]).is_dir():
        record["site_extra"] = paths["platlib"]
    record["version"] = _installed_version(recipe.packages[0], record["site"])
    check_imports(recipe, record, steps, settings)


def _installed_version(spec: str, site: str) -> Optional[str]:
    from importlib import metadata

    wanted = spec.split("==")[0].split(">")[0].split("<")[0].strip().lower().replace("_", "-")
    for dist in metadata.distributions(path=[site]):
        if dist.metadata["Name"] and dist.metadata["Name"].lower().replace("_", "-") == wanted:
            return dist.version
    return None


RUNNERS = {"wheel": run_wheel, "tree": run_tree, "pip": run_pip}


def summary_lines(records: list[dict]) -> list[str]:
    lines = []
    for rec in records:
        what = rec.get("version") or (rec.get("commit") or "")[:7]
        extra = f"  {rec.get('error')}" if rec.get("outcome") in ("failed", "skipped") else f"  {rec.get('built', '')}"
        seconds = 0 if rec.get("outcome") == "reused" else rec.get("seconds") or 0
        lines.append(f"  {rec['name']:<18} {rec['outcome']:<8} {fmt_seconds(seconds):>7}  {what}{extra}")
    return lines


def failure_tail(record: dict) -> list[str]:
    log = record.get("log")
    return tail(Path(log)) if log and record.get("outcome") == "failed" else []
