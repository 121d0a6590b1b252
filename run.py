"""Entry point: `python run.py experiment=gemm [overrides]`, or `-m` for sweeps (docs/scaling.md)."""
from __future__ import annotations

import sys
import warnings

import hydra
from omegaconf import DictConfig, OmegaConf

# configs/hydra/launcher/*.yaml extend the launcher plugins' configs of the same name, which
# Hydra 1.3 does by matching them to the plugin's schema, with a deprecation notice each run.
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema with the same name")


def register_resolvers() -> None:
    """`${gpu_count:}` in the launcher configs: one parallel job per GPU of the node."""
    from repro.measure.devices import gpu_count_for_jobs

    OmegaConf.register_new_resolver("gpu_count", gpu_count_for_jobs, replace=True)


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
    register_resolvers()
    main()
