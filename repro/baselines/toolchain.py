"""What the builds need from the machine: compilers, ninja, the GPU's arch, versions.

Every external command runs with a time limit; nothing here raises on a missing tool: callers
get None and say, in one line, what is missing and how to provide it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Optional

HINTS = {
    "nvcc": "install the CUDA toolkit, or set CUDA_HOME to it",
    "g++": "install a C++ compiler (apt-get install g++), or set CXX",
    "ninja": "pip install ninja",
    "git": "install git",
}


def cuda_home() -> Optional[Path]:
    for candidate in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if candidate and (Path(candidate) / "bin" / "nvcc").is_file():
            return Path(candidate)
    nvcc = shutil.which("nvcc")
    return Path(nvcc).resolve().parent.parent if nvcc else None


def find_tool(name: str) -> Optional[str]:
    """The executable for a tool of recipes' `needs` (`python:<module>`: the module's origin), or None."""
    if name.startswith("python:"):
        import importlib.util

        spec = importlib.util.find_spec(name.split(":", 1)[1])
        return (spec.origin or "namespace") if spec else None
    if name == "nvcc":
        home = cuda_home()
        return str(home / "bin" / "nvcc") if home else None
    if name == "g++":
        return shutil.which(os.environ.get("CXX") or "g++")
    if name == "ninja":
        found = shutil.which("ninja")
        if found:
            return found
        try:  # the `ninja` wheel ships its binary inside the package
            import ninja

            binary = Path(ninja.BIN_DIR) / "ninja"
            if binary.is_file() and not os.access(binary, os.X_OK):
                binary.chmod(0o755)  # unpacked from a wheel by a plain unzip: no exec bit
            return str(binary) if binary.is_file() and os.access(binary, os.X_OK) else None
        except (ImportError, AttributeError, OSError):
            return None
    return shutil.which(name)


def missing_tools(needs: tuple[str, ...]) -> Optional[str]:
    """One line naming the first missing tool and how to get it, or None."""
    for tool in needs:
        if find_tool(tool) is None:
            if tool.startswith("python:"):
                module = tool.split(":", 1)[1]
                return f"python module {module} not found (pip install {module})"
            return f"{tool} not found ({HINTS.get(tool, 'install it')})"
    return None


def _run(cmd: list[str], timeout: float = 30) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


@lru_cache(maxsize=None)
def cuda_release() -> Optional[str]:
    nvcc = find_tool("nvcc")
    match = re.search(r"release (\d+\.\d+)", _run([nvcc, "--version"])) if nvcc else None
    return match.group(1) if match else None


@lru_cache(maxsize=None)
def detect_arch() -> Optional[str]:
    """The first GPU's compute capability without the dot ("90"), or None without a GPU."""
    if not shutil.which("nvidia-smi"):
        return None
    out = _run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"])
    first = out.strip().splitlines()[0].strip() if out.strip() else ""
    return first.replace(".", "") if re.fullmatch(r"\d+\.\d+", first) else None


def package_version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def jobs(configured: str) -> int:
    if configured not in ("auto", "", "None"):
        return max(1, int(configured))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def toolchain_key(kind: str, arch: str) -> dict:
    """What a build's result depends on besides the recipe (part of the recipe hash)."""
    if kind == "tree":
        return {}
    key = {"python": python_version(), "torch": package_version("torch")}
    if kind == "wheel":
        key.update(arch=arch, cuda=cuda_release())
    return key


def build_path_env() -> dict:
    """PATH with the ninja wheel's binary and nvcc's folder appended when they are not on it."""
    extra = []
    ninja = find_tool("ninja")
    if ninja and not shutil.which("ninja"):
        extra.append(str(Path(ninja).parent))
    home = cuda_home()
    if home and not shutil.which("nvcc"):
        extra.append(str(home / "bin"))
    path = os.pathsep.join([os.environ.get("PATH", "")] + extra)
    env = {"PATH": path}
    if home:
        env["CUDA_HOME"] = str(home)
    return env
