"""Where the report goes: `--out` checked before any work, and the new folder put in place of the old
so that a kill at any moment leaves one whole folder, the old or the new, never none or a mix.

The report is built in a sibling `.<out>.build-<stamp>-<random>` (a copy of `out`, so hand-written
files stay). It then takes the place of `out` in one step: renameat2(RENAME_EXCHANGE) swaps the two
folders atomically (Linux); where the kernel or file system cannot exchange, `out` is first renamed
to `.<out>.old-<same id>` and the new folder renamed in. A run killed between those two renames
leaves no `out`, and the next run (`recover`, before anything else) renames the old one back.
Leftover `.<out>.build-*` and `.<out>.old-*` folders of killed runs are removed then too. Runs
into one folder take turns (a lock on its parent folder), so none removes another's build.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import signal
import stat
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

BUILD, OLD = "build", "old"
RENAME_EXCHANGE = 2  # linux/fs.h
AT_FDCWD = -100
NAME_MAX = 255
ID_CHARS = len("-0123456789abcdef-") + 8  # the stamp and mkdtemp's random part

# Called with each step's name (and the folder it is about, if any): the fault-injection tests stop
# the process there.
on_step: Optional[Callable[[str, Optional[Path]], None]] = None


class ReportError(ValueError):
    """A report request that cannot be served as asked (e.g. `--out` names a file)."""


class LateInterrupt(KeyboardInterrupt):
    """Ctrl-C during the swap: honoured once the swap is done, so the new report is in place."""


def step(name: str, path: Optional[Path] = None) -> None:
    if on_step is not None:
        on_step(name, path)


# `--out`, checked before any work.

def _refuse(out: Path, why: str) -> ReportError:
    text = out.as_posix()
    return ReportError(f"--out {text if text.isprintable() else ascii(text)}: {why}")


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return NAME_MAX


def _check_name(out: Path) -> None:
    if out.name in ("", ".", ".."):
        raise _refuse(out, "names no folder of its own (the report replaces the folder it is given); "
                           "name one, e.g. --out paper")
    longest = _name_max(out.parent) - ID_CHARS - len(".") - len(f".{BUILD}")
    if len(os.fsencode(out.name)) > longest:
        raise _refuse(out, f"the name is too long ({len(os.fsencode(out.name))} bytes; at most {longest} here, "
                           "its build folder's name is longer)")
    if len(os.fsencode(os.path.abspath(out))) + ID_CHARS + 8 >= os.pathconf("/", "PC_PATH_MAX"):
        raise _refuse(out, "the path is too long")


def _check_parent(out: Path) -> None:
    parent = out.parent
    try:
        info = os.stat(parent)
    except FileNotFoundError:
        raise _refuse(out, f"its folder {parent.as_posix()} does not exist (make it first)") from None
    except OSError as exc:
        raise _refuse(out, f"its folder {parent.as_posix()} cannot be reached ({exc.strerror})") from None
    if not stat.S_ISDIR(info.st_mode):
        raise _refuse(out, f"{parent.as_posix()} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _refuse(out, f"its folder {parent.as_posix()} is read-only here")


def _check_target(out: Path) -> None:
    try:
        info = os.lstat(out)
    except FileNotFoundError:
        return  # a new folder
    except OSError as exc:
        raise _refuse(out, f"cannot be read ({exc.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        if not os.path.exists(out):
            raise _refuse(out, "a symbolic link that leads nowhere (dangling, or a loop); "
                               "give a folder, not a link")
        raise _refuse(out, f"a symbolic link (to {os.readlink(out)}); give the folder itself, "
                           "the report replaces what --out names")
    if not stat.S_ISDIR(info.st_mode):
        raise _refuse(out, "that is a file; the report is written into a folder")
    if not os.access(out, os.R_OK | os.X_OK):
        raise _refuse(out, "cannot be read (its files are copied into the new report)")


def _check_apart(out: Path, results: Path) -> None:
    """The report never replaces, or writes inside, the results it reads (nor the other way round)."""
    mine, theirs = Path(os.path.abspath(out)), Path(os.path.realpath(results))
    real = Path(os.path.realpath(out))
    for path in {mine, real}:
        if path == theirs or theirs.is_relative_to(path) or path.is_relative_to(theirs):
            raise _refuse(out, f"overlaps the results it reads ({results.as_posix()}); write the report elsewhere")


def check_out(out: Path, results: Path) -> Path:
    """`out` if the report can be written there; else ReportError naming why (nothing touched)."""
    out = Path(out)
    _check_name(out)
    _check_parent(out)
    _check_target(out)
    _check_apart(out, Path(results))
    return out


# Staging, recovery and the swap.

def _prefix(out: Path, kind: str) -> str:
    return f".{out.name}.{kind}-"


def _leftovers(out: Path, kind: str) -> list[Path]:
    """Folders a killed run left, oldest first (their ids start with a clock stamp)."""
    prefix = _prefix(out, kind)
    return sorted(p for p in out.parent.iterdir() if p.name.startswith(prefix))


def remove(path: Path) -> None:
    step("removing", path)
    if os.path.islink(path) or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def recover(out: Path) -> list[str]:
    """Finish what a killed run left: the old folder back if `out` is gone, leftovers removed.

    Returns what was done, one line each (nothing when nothing was left)."""
    done = []
    olds = _leftovers(out, OLD)
    if olds and not os.path.lexists(out):
        os.rename(olds[-1], out)  # the killed run had moved it aside and not yet put the new one in
        done.append(f"{out.as_posix()} restored from {olds[-1].name}, left by a run killed mid-swap")
        olds = olds[:-1]
    for path in _leftovers(out, BUILD) + olds:
        remove(path)
        done.append(f"removed {path.name}, left by a killed run")
    return done


def recover_or_refuse(out: Path) -> list[str]:
    """`recover`, its failure (e.g. a read-only folder) a bad `--out` rather than a traceback."""
    try:
        return recover(out)
    except OSError as exc:
        raise _refuse(out, f"cannot put right what a killed run left in {out.parent.as_posix()} "
                           f"({exc.strerror or exc})") from None


def make_stage(out: Path) -> Path:
    """The empty sibling folder the report is built in; an OSError here is a bad `--out`."""
    try:
        return Path(tempfile.mkdtemp(dir=out.parent, prefix=f"{_prefix(out, BUILD)}{time.time_ns():016x}-"))
    except OSError as exc:
        raise _refuse(out, f"cannot write in {out.parent.as_posix()} ({exc.strerror or exc})") from None


def fill_stage(stage: Path, out: Path) -> None:
    """Start from a copy of `out` (hand-written files stay), with its permissions."""
    if out.is_dir():
        shutil.copytree(out, stage, symlinks=True, dirs_exist_ok=True)
        stage.chmod(out.stat().st_mode & 0o7777)
    else:
        mask = os.umask(0o022)
        os.umask(mask)
        stage.chmod(0o777 & ~mask)  # mkdtemp makes 0700


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step; False where this kernel or file system cannot."""
    libc = _libc()
    renameat2 = getattr(libc, "renameat2", None) if libc is not None else None
    if renameat2 is None:
        return False
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Ctrl-C waits until the block is done (then raises LateInterrupt): a swap is never half made."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and previous is signal.default_int_handler:
        raise LateInterrupt()


def publish(stage: Path, out: Path) -> None:
    """Put the finished `stage` where `out` is; whatever stops this leaves `out` whole (old or new)."""
    with _interrupts_deferred():
        step("publishing")
        if not os.path.lexists(out):
            os.rename(stage, out)  # nothing to replace: one atomic rename
            step("renamed")
            return
        if exchange(stage, out):
            step("exchanged")  # `out` is the new report; `stage` holds the old one
            remove(stage)
            step("done")
            return
        old = stage.with_name(_prefix(out, OLD) + stage.name[len(_prefix(out, BUILD)):])
        os.rename(out, old)
        step("moved-aside")  # no `out` until the next rename; `recover` puts `old` back
        try:
            os.rename(stage, out)
        except OSError:
            os.rename(old, out)  # as it was, now rather than at the next run
            raise
        step("moved-in")
        remove(old)
        step("done")


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """One report at a time into a folder's children (so recovery never removes a live build)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
