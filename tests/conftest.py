"""Shared test setup: the repository root is importable; GPU tests skip without a device."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords or "tests/gpu/" in item.nodeid:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Schedule caches written by a test go to a temporary folder, never the user's cache."""
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
