"""Reading the files to count: the project's working tree, or an upstream repository at a
pinned commit from a local clone.

Upstream clones are looked up under a sources folder as `<name>`, `<name>.git` or
`<owner>/<name>` (from the repository URL); a work-tree clone, a bare clone and a plain folder
of files all work. Files are read with `git show <commit>:<path>`, so the clone may have any
branch checked out; only a plain folder (no git) is read as is, and then the commit is
recorded as unverified.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class SourceUnavailable(LookupError):
    """No clone of the repository, or it lacks the pinned commit or a listed file."""


def repo_owner_name(url: str) -> tuple[str, str]:
    """('Dao-AILab', 'flash-attention') from 'https://github.com/Dao-AILab/flash-attention'."""
    parts = url.rstrip("/").removesuffix(".git").split("/")
    return parts[-2], parts[-1]


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-C", str(folder), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        check=False,
    )


def find_clone(sources: Path, url: str) -> Path | None:
    """The local copy of `url` under `sources`, or None."""
    owner, name = repo_owner_name(url)
    for candidate in (sources / name, sources / f"{name}.git", sources / owner / name):
        if candidate.is_dir():
            return candidate
    return None


class UpstreamReader:
    """Reads files of one repository at one commit from a local clone."""

    def __init__(self, sources: Path, url: str, commit: str) -> None:
        folder = find_clone(sources, url)
        if folder is None:
            raise SourceUnavailable(f"no clone of {url} under the sources folder")
        self.folder, self.commit = folder, commit
        self.is_git = _git(folder, "rev-parse", "--git-dir").returncode == 0
        if self.is_git and _git(folder, "cat-file", "-e", f"{commit}^{{commit}}").returncode:
            raise SourceUnavailable(f"clone of {url} lacks commit {commit}")

    @property
    def verified(self) -> bool:
        """Whether the files come from the pinned commit (not from a plain folder)."""
        return self.is_git

    def read(self, path: str) -> str:
        if not self.is_git:
            file = self.folder / path
            if not file.is_file():
                raise SourceUnavailable(f"{path} not in {self.folder.name}")
            return file.read_text(encoding="utf-8", errors="replace")
        shown = _git(self.folder, "show", f"{self.commit}:{path}")
        if shown.returncode:
            raise SourceUnavailable(f"{path} not at {self.commit[:12]}")
        return shown.stdout


def read_project_file(path: str) -> str | None:
    """A file of this project's working tree, or None when it does not exist (yet)."""
    file = PROJECT_ROOT / path
    return file.read_text(encoding="utf-8") if file.is_file() else None


def project_commit() -> str:
    """The project's HEAD commit, or '' before the first commit; dirty trees get a suffix."""
    head = _git(PROJECT_ROOT, "rev-parse", "HEAD")
    if head.returncode:
        return ""
    dirty = _git(PROJECT_ROOT, "status", "--porcelain", "--", "kernels").stdout.strip()
    return head.stdout.strip() + ("+dirty" if dirty else "")
