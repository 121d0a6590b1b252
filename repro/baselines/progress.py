"""The progress display: one line per step with its time, and a heartbeat while a long step
runs (rewritten in place on a terminal, a line every 30 s in a log)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, TextIO


def fmt_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class Progress:
    def __init__(self, total: int, stream: Optional[TextIO] = None, quiet_s: float = 30.0) -> None:
        self.total, self.index = total, 0
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.quiet_s = quiet_s

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, name: str, title: str) -> None:
        self.index += 1
        self.say(f"[{self.index}/{self.total}] {name}: {title}")

    def step(self, step: str, seconds: float, status: str, note: str = "") -> None:
        extra = f"  {note}" if note else ""
        self.say(f"      {step:<8} {status:<7} {fmt_seconds(seconds):>7}{extra}")

    def heartbeat(self, step: str, elapsed: float, log: Path) -> None:
        tail = last_line(log)
        if self.tty:
            text = f"      {step:<8} running {fmt_seconds(elapsed):>7}  {tail[:70]}"
            print("\r" + text.ljust(100), end="", file=self.stream, flush=True)
        else:
            self.say(f"      {step:<8} running {fmt_seconds(elapsed):>7}  (log: {log})")

    def clear(self) -> None:
        if self.tty:
            print("\r" + " " * 100 + "\r", end="", file=self.stream, flush=True)


def last_line(log: Path, width: int = 200) -> str:
    try:
        with open(log, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 4096))
            lines = [line.strip() for line in handle.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:width] if lines else ""


def tail(log: Path, count: int = 12) -> list[str]:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip()][-count:]


def run_logged(cmd: list[str], cwd: Path, env: dict, log: Path, timeout: float,
               progress: Optional[Progress], step: str) -> int:
    """Run `cmd` with its output appended to `log`; heartbeat while it runs; kill it (and its
    children) at `timeout`. Returns the exit code (124 on timeout)."""
    start = time.monotonic()
    with open(log, "ab") as out:
        out.write(f"\n$ (cd {cwd} && {' '.join(cmd)})\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        last_beat = start
        while True:
            try:
                return proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if now - start > timeout:
                _kill_group(proc)
                out.write(f"\n[killed after {timeout:.0f} s]\n".encode())
                return 124
            if progress and (progress.tty or now - last_beat >= progress.quiet_s):
                progress.heartbeat(step, now - start, log)
                last_beat = now


def _kill_group(proc: subprocess.Popen) -> None:
    import os
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
