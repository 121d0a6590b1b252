"""Entry point: `python run.py experiment=gemm [overrides]`, or `-m` for sweeps."""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> int:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from repro.cli import dispatch

    code = dispatch(cfg)
    # A single run exits with its code; in a multirun one failed job must not end the others.
    if code and HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
