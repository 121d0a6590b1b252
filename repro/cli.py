"""Turns a composed config into a run, and every expected failure into one clear line."""
from __future__ import annotations

import sys

from omegaconf import DictConfig

from repro.measure.hardware import HardwareError
from repro.results.store import StoreError
from repro.run.validate import ConfigError

EXIT_CONFIG, EXIT_NO_DEVICE, EXIT_STORE = 2, 3, 4


def dispatch(cfg: DictConfig) -> int:
    """Run the configured task; print `error: ...` and return an exit code instead of a traceback."""
    task = cfg.get("task", "measure")
    try:
        if task == "measure":
            from repro.run.runner import run

            return run(cfg)
        if task == "loc":
            from repro.loc import run as run_loc

            run_loc(cfg)
            return 0
        if task == "portability":
            from repro.portability import run as run_portability

            run_portability(cfg)
            return 0
        raise ConfigError(f"task={task!r}: allowed values: measure, loc, portability")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except HardwareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_DEVICE
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORE
