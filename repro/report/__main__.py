"""python -m repro.report --results results --out paper [--figures-only]

Exit codes: 0 written; 2 a bad request (e.g. --out names a file); 4 results that cannot be read
(missing folder, cut or damaged CSV, malformed manifest): one `error:` line, and paper/ untouched.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repro.report.build import CONFIG_DIR, ReportError, generate
from repro.results.store import StoreError

EXIT_USAGE, EXIT_STORE = 2, 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.report", description=__doc__)
    parser.add_argument("--results", type=Path, default=Path("results"), help="results tree to read")
    parser.add_argument("--out", type=Path, default=Path("paper"), help="folder to write the report into")
    parser.add_argument("--figures-only", action="store_true", help="regenerate figures only")
    parser.add_argument("--config-dir", type=Path, default=CONFIG_DIR, help="holds report.yaml and claims.yaml")
    args = parser.parse_args(argv)
    try:
        written = generate(args.results, args.out, args.figures_only, args.config_dir)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"error: {exc}; {args.out.as_posix()} was left as it was", file=sys.stderr)
        return EXIT_STORE
    print(f"wrote {len(written)} files under {args.out.as_posix()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
