"""Getting a repository's tree at its pinned commit: from a local clone, a source archive, a
plain folder, a folder of such archives, or (with internet) a shallow git fetch.

Every git call runs with a time limit; a source that cannot be reached raises SourceError
with one line that says what was tried and how to point at a local copy instead.
"""
from __future__ import annotations

import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path
from typing import Optional

from repro.baselines.recipes import Repo, Settings

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.xz", ".zip")
DONE = ".complete"  # written last into a tree: a folder without it is a partial copy


class SourceError(RuntimeError):
    """The pinned tree cannot be had; the message is one line."""


def git(*args: str, cwd: Optional[Path] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    if shutil.which("git") is None:
        raise SourceError("git not found on PATH (needed to read clones and fetch sources)")
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              errors="replace", timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise SourceError(f"git {args[0]} gave no answer within {timeout:.0f} s") from None


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


def local_source(repo: Repo, settings: Settings, baseline: Optional[str] = None) -> Optional[Path]:
    """The local copy named for this baseline or repository, or found in sources_dir, or None."""
    for key in (baseline, repo.name):
        if key and key in settings.sources:
            path = Path(settings.sources[key]).expanduser()
            if not path.exists():
                raise SourceError(f"baselines.sources.{key}: {path} does not exist")
            return path
    folder = settings.sources_dir
    if folder is None:
        return None
    if not folder.is_dir():
        raise SourceError(f"baselines.sources_dir: {folder} is not a folder")
    url_name = repo.url.rstrip("/").removesuffix(".git").rsplit("/", 1)[-1]
    stems = (f"{repo.name}-{repo.short}", f"{repo.name}-{repo.commit}", f"{url_name}-{repo.short}", repo.name)
    for stem in stems:
        for candidate in [folder / f"{stem}{suffix}" for suffix in ARCHIVE_SUFFIXES] + [folder / stem]:
            if candidate.exists():
                return candidate
    return None


def describe(repo: Repo, source: Optional[Path]) -> str:
    """Where the tree comes from, for the plan and the record."""
    if source is None:
        return f"git fetch {repo.url} @ {repo.short}"
    # the name only: records travel into results, a machine's folders do not
    if is_archive(source):
        return f"archive {source.name}"
    if source.is_dir() and ((source / ".git").exists() or (source / "HEAD").is_file()):
        return f"clone {source.name}"
    return f"folder {source.name}"


def materialize(repo: Repo, dest: Path, source: Optional[Path], timeout: float) -> str:
    """Put `repo` at its commit into `dest` (reused when complete); returns where it came from."""
    origin = describe(repo, source)
    if (dest / DONE).is_file() and (dest / DONE).read_text().strip() == repo.commit:
        return origin
    if dest.exists():
        shutil.rmtree(dest)
    partial = dest.with_name(dest.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    if source is None:
        _fetch(repo, partial, timeout)
    elif is_archive(source):
        _extract(source, partial)
    elif _is_git(source, timeout):
        _from_clone(repo, source, partial, timeout)
    elif source.is_dir():
        shutil.copytree(source, partial, dirs_exist_ok=True, symlinks=True)
    else:
        raise SourceError(f"{repo.name}: {source} is neither a clone, a folder nor an archive ({', '.join(ARCHIVE_SUFFIXES)})")
    _keep_paths(partial, repo.paths)
    (partial / DONE).write_text(repo.commit + "\n")
    partial.rename(dest)
    return origin


def _is_git(path: Path, timeout: float) -> bool:
    return path.is_dir() and git("-C", str(path), "rev-parse", "--git-dir", timeout=timeout).returncode == 0


def _from_clone(repo: Repo, clone: Path, dest: Path, timeout: float) -> None:
    """`git archive` of the pinned commit: works for bare and work-tree clones on any branch."""
    if git("-C", str(clone), "cat-file", "-e", f"{repo.commit}^{{commit}}", timeout=timeout).returncode:
        head = git("-C", str(clone), "rev-parse", "--short", "HEAD", timeout=timeout).stdout.strip()
        raise SourceError(f"{repo.name}: clone {clone} lacks commit {repo.short} (its HEAD is {head or 'unknown'})")
    tar = dest / ".source.tar"
    done = git("-C", str(clone), "archive", "--format=tar", "-o", str(tar), repo.commit, *repo.paths, timeout=timeout)
    if done.returncode or not tar.is_file():
        raise SourceError(f"{repo.name}: git archive in {clone} failed: {_last_line(done.stderr)}")
    with tarfile.open(tar) as archive:
        archive.extractall(dest, filter="data")
    tar.unlink()


def _fetch(repo: Repo, dest: Path, timeout: float) -> None:
    """A shallow fetch of exactly the pinned commit (GitHub serves commits by id)."""
    git("init", "-q", str(dest), timeout=60)
    done = git("-C", str(dest), "fetch", "-q", "--depth", "1", repo.url, repo.commit, timeout=timeout)
    if done.returncode:
        raise SourceError(
            f"{repo.name}: cannot fetch {repo.url} @ {repo.short} ({_last_line(done.stderr)}); "
            f"offline, point baselines.sources.{repo.name}=PATH at a clone or source archive")
    done = git("-C", str(dest), "-c", "advice.detachedHead=false", "checkout", "-q", "FETCH_HEAD", timeout=timeout)
    if done.returncode:
        raise SourceError(f"{repo.name}: checkout of {repo.short} failed: {_last_line(done.stderr)}")
    shutil.rmtree(dest / ".git")


def _extract(archive_path: Path, dest: Path) -> None:
    """Unpack; a single top-level folder (`git archive --prefix=...`) is stripped."""
    try:
        if archive_path.name.endswith(".zip"):
            with zipfile.ZipFile(archive_path) as archive:
                archive.extractall(dest)
        else:
            with tarfile.open(archive_path) as archive:
                archive.extractall(dest, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as err:
        raise SourceError(f"{archive_path}: not a readable archive ({err})") from None
    entries = [entry for entry in dest.iterdir() if entry.name != "pax_global_header"]
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0]
        for child in list(inner.iterdir()):
            child.rename(dest / child.name)
        inner.rmdir()


def _keep_paths(tree: Path, paths: tuple[str, ...]) -> None:
    """Check that the listed paths are there (an archive may hold only those)."""
    missing = [path for path in paths if not (tree / path).exists()]
    if missing:
        raise SourceError(f"{tree.name.removesuffix('.partial')}: the source lacks {missing[0]}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
