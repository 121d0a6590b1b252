"""Fault isolation: (case, backend) measurements in a child process with a time limit.

A CUDA fault poisons its process's context for good, a bad pointer kills it, and a hung kernel
never returns; in a child, each becomes a status row and the sweep goes on in a healthy parent.
One child serves many measurements (starting one costs seconds: torch, CUDA, the experiment's
imports) and is replaced after any failure, so a poisoned context never reaches the next case.
Children recompile their kernels from TileLang's and Triton's disk caches.

Which backends run in a child (`bench.isolate`): true = all, false = none, auto = every backend
not marked `trusted` on its `Backend`, i.e. kernels written here (TileLang, Triton) and third-party
extensions (FlashAttention, FlashMLA, FlashInfer, DeepGEMM) are isolated; PyTorch's own operators
run in the parent.
"""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any, Optional

from repro.measure.child import child_env, death_text, exception_text


RESTART_AFTER = ("error", "oom", "timeout")  # a context that failed once is not trusted again


def isolated(mode: Any, backend) -> bool:
    """Whether `backend` (a `Backend`) is measured in a child under `bench.isolate=mode`."""
    return mode is True or (mode == "auto" and not backend.trusted)


def _failure_row(exc: BaseException) -> dict:
    status = "oom" if type(exc).__name__ == "OutOfMemoryError" else "error"
    return {"status": status, "error": exception_text(exc)}


def _die_with_parent() -> None:
    """A parent killed mid-measurement must not leave a hung child behind (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _serve(conn) -> None:
    """The child: set up from the first message, then measure what the parent sends until None."""
    from repro.measure.case import measure_case
    from repro.measure.experiment import load_experiment
    from repro.measure.settings import BenchSettings

    _die_with_parent()
    exp_name, settings_json, hw, device = conn.recv()
    settings = BenchSettings.from_json(settings_json)
    exp, flusher = load_experiment(exp_name), None
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        kind, payload = task
        try:
            if kind == "prepare":
                exp.prepare(*payload)
                result = {"status": "ok"}
            else:
                if flusher is None and device != "cpu" and settings.flush_l2:
                    from repro.measure.timer import L2Flusher

                    flusher = L2Flusher()
                names, case = payload
                result = measure_case(exp, [exp.backend(n) for n in names], case, settings, hw, flusher, device)
        except BaseException as exc:  # measure() catches a backend's faults; this is for the rest
            result = _failure_row(exc)
        conn.send(result)


def _death_row(exitcode: Optional[int]) -> dict:
    oom = exitcode == -signal.SIGKILL  # the harness did not send it
    verb = "crashed: " if exitcode is not None and exitcode < 0 and not oom else ""
    return {"status": "oom" if oom else "error", "error": f"child process {verb}{death_text(exitcode)}"}


class Sandbox:
    """A child process measuring one experiment's (case, backend) pairs, one at a time."""

    def __init__(self, exp_name: str, settings, hw: dict, device: str = "cuda"):
        self.settings = settings  # a BenchSettings; the child gets it as JSON and rebuilds it
        self.args = (exp_name, settings.to_json(), hw, device)
        self.proc = self.conn = None

    def _start(self) -> None:
        # A fresh interpreter, not a fork (the parent may hold a CUDA context) nor a
        # multiprocessing spawn (inside a joblib or submitit worker its start method is theirs).
        ours, theirs = socket.socketpair()
        env = child_env()
        self.proc = subprocess.Popen([sys.executable, "-m", "repro.run.isolate", str(theirs.fileno())],
                                     pass_fds=[theirs.fileno()], env=env)
        theirs.close()
        self.conn = Connection(ours.detach())
        self.conn.send(self.args)

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            self.conn.send(None)
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.conn.close()
        self.proc = self.conn = None

    def _call(self, task: tuple, limit_s: float) -> dict:
        if self.proc is None:
            self._start()
        try:
            self.conn.send(task)
            if self.conn.poll(limit_s):
                result = self.conn.recv()
            else:
                self.proc.kill()
                result = {"status": "timeout", "error": f"no result within {limit_s:g} s "
                                                        "(bench.timeout_s); child killed"}
        except (EOFError, OSError):
            result = _death_row(self._exit_code())
        rows = [result] if "status" in result else list(result.values())  # one failure, or a case's rows
        if any(r.get("status") in RESTART_AFTER for r in rows) or self.proc.poll() is not None:
            self.stop()
        return result

    def _exit_code(self) -> Optional[int]:
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def measure(self, backend: str, case: dict) -> dict:
        """One backend of a case in the child: its row (a crash, hang or OOM becomes the row)."""
        result = self._call(("measure", ([backend], case)), self.settings.timeout_s)
        return result.get(backend, result) if "status" not in result else result

    def measure_case(self, names: list[str], case: dict) -> dict[str, dict]:
        """Every backend of a case in one child, their trials interleaved there. When the child
        dies, hangs or runs out of memory, nobody knows which backend did it: each is then
        measured alone in a fresh child, so the culprit gets the failure row and the rest theirs."""
        result = self._call(("measure", (list(names), case)), self.settings.timeout_s * max(1, len(names)))
        if "status" not in result:
            return result
        return {name: self.measure(name, case) for name in names}

    def prepare(self, cases: list, backends: list, limit_s: float) -> dict:
        return self._call(("prepare", (cases, backends)), limit_s)

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
