"""Lines of code: one counter, for every implementation the suite compares (claims C1, C2, C5).

`run(cfg)` recounts the implementations listed under `loc.implementations` (upstream ones only
from clones under `loc.sources`), writes `loc.out` and returns the table. The counting rules are
in `repro.loc.counter` and `repro/loc/RULES.md`.
"""
from __future__ import annotations

from pathlib import Path

from repro.measure.experiment import config_section
from repro.loc.counter import COUNTER_VERSION, LineCounts, count_definitions, count_file
from repro.loc.sources import PROJECT_ROOT

__all__ = ["COUNTER_VERSION", "LineCounts", "count_definitions", "count_file", "run"]

DEFAULT_OUT = "results/loc.csv"


def _plain(cfg) -> dict:
    """The `loc` section as plain Python data."""
    return config_section(cfg, "loc")


def _project_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def run(cfg):
    """Count every implementation in `cfg.loc`, write the CSV to `cfg.loc.out`, return it."""
    from repro.loc.table import build_table, read_committed

    loc = _plain(cfg)
    out = _project_path(loc.get("out") or DEFAULT_OUT)
    sources = loc.get("sources")
    sources = Path(sources).expanduser().resolve() if sources else None
    if sources is not None and not sources.is_dir():
        from repro.run.validate import ConfigError  # the harness prints these as one clear line

        raise ConfigError(f"loc.sources: {sources} is not a folder")
    table = build_table(loc["implementations"], sources, read_committed(out))
    from repro.results.store import atomic_write_csv

    atomic_write_csv(table, out)
    return table
