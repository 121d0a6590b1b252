"""Small helpers for tests: composing the suite's Hydra config without running it."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def tree_files(root: Path) -> dict[str, bytes]:
    """Every file under root, by relative path, with its bytes: a folder's whole content, to compare."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
