"""`python -m repro.loc [--sources DIR] [--out results/loc.csv]`: recount and write the table.

Without --sources the committed upstream rows are kept and only this project's kernels are
recounted. With it, DIR/<repo-name> (a clone, bare or not, holding the pinned commit) is read.
"""
from __future__ import annotations

import argparse

from repro.loc import run
from repro.loc.budgets import check_budget
from repro.loc.sources import PROJECT_ROOT

DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "experiment" / "loc.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.loc", description=__doc__)
    parser.add_argument("--sources", help="folder holding upstream clones")
    parser.add_argument("--out", help="CSV to write (default: loc.out of the config)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="the loc experiment config")
    args = parser.parse_args(argv)

    from omegaconf import OmegaConf

    cfg = OmegaConf.load(args.config)
    if args.sources:
        cfg.loc.sources = args.sources
    if args.out:
        cfg.loc.out = args.out
    table = run(cfg)
    shown = ["implementation", "language", "code_lines", "total_lines", "status"]
    print(table[shown].to_string(index=False))
    checks = [check_budget(key, budget) for key, budget in cfg.loc.budgets.items()]
    over = [check for check in checks if check.code_lines is not None and not check.within]
    for check in over:
        print(f"over budget: {check.key} has {check.code_lines} code lines > {check.budget}")
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
