"""Entry point: `python run.py experiment=gemm [overrides]`, or `-m` for sweeps (docs/scaling.md).

Exit codes (repro/cli.py): 0 done; 2 a bad override or config value, Hydra-level mistakes
included (every job of a `-m` sweep is checked before the first runs; a sweep with no job is one);
3 no usable device; 4 a damaged results file or manifest; 130 interrupted (Ctrl-C: the rows
stored are kept, the same command resumes). A `-m` sweep exits with the code of its first
failed job, after every job has run; Ctrl-C stops it at once.
"""
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

    from repro.cli import EXIT_INTERRUPTED, dispatch

    code = dispatch(cfg)
    # A single run exits with its code; in a multirun one failed job must not end the others:
    # repro.cli.SweepExitStatus records it, and cli() exits with it once the sweep is over.
    # Ctrl-C ends the sweep too: no further job starts.
    if code and (HydraConfig.get().mode != RunMode.MULTIRUN or code == EXIT_INTERRUPTED):
        sys.exit(code)
    return code


def cli() -> int:
    """Check the command line, run it through Hydra, then give a sweep the exit code of its jobs."""
    from repro.cli import EXIT_CONFIG, EXIT_INTERRUPTED, INTERRUPTED, check_command_line, error, sweep_exit_code

    try:
        register_resolvers()
        problem = check_command_line(sys.argv[1:])
        if problem:
            return error(problem, EXIT_CONFIG)
        main()
    except KeyboardInterrupt:  # before or between jobs (a job's own Ctrl-C is its dispatch's)
        return error(INTERRUPTED, EXIT_INTERRUPTED)
    return sweep_exit_code()


if __name__ == "__main__":
    sys.exit(cli())
