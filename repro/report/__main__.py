"""python -m repro.report --results results --out paper [--figures-only]"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repro.report.build import CONFIG_DIR, generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.report", description=__doc__)
    parser.add_argument("--results", type=Path, default=Path("results"), help="results tree to read")
    parser.add_argument("--out", type=Path, default=Path("paper"), help="folder to write the report into")
    parser.add_argument("--figures-only", action="store_true", help="regenerate figures only")
    parser.add_argument("--config-dir", type=Path, default=CONFIG_DIR, help="holds report.yaml and claims.yaml")
    args = parser.parse_args(argv)
    written = generate(args.results, args.out, args.figures_only, args.config_dir)
    print(f"wrote {len(written)} files under {args.out.as_posix()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
