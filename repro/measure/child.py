"""What every child process of the suite shares (isolated measurements, portability builds): the
environment it starts with, and how a failure it reports, or its death, is put in one line."""
from __future__ import annotations

import os
import signal
import traceback
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict:
    """This process's environment, the project importable first, plus `extra`."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def exception_text(exc: BaseException) -> str:
    """`Type: first line of the message (file:line)`, where the exception was raised."""
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
    first = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}: {first}{where}"


def death_text(exitcode: Optional[int]) -> str:
    """Why a child ended without reporting: the signal that killed it, or its exit code."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        if -exitcode == signal.SIGKILL:
            return "killed by SIGKILL, not by the harness: most likely the system's out-of-memory killer"
        return f"killed by {name} (a fault in native code, e.g. an illegal memory access or a failed assertion)"
    return f"exited with code {exitcode} before reporting"
