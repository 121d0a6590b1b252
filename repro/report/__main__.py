"""python -m repro.report --results results --out paper [--figures-only]

Exit codes: 0 written; 2 a bad request, found before any work (--out names a file, a symbolic
link, `.`, a folder that is missing or read-only, a name too long); 4 results that cannot be
used (missing folder, nothing measured, cut or damaged CSV, an impossible figure or damaged name,
a malformed manifest); 130 interrupted (Ctrl-C). Each failure is one `error:` line, and paper/ is
left untouched (a Ctrl-C that lands in the final swap lets the swap finish, and says so).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repro.report.build import CONFIG_DIR, ReportError, generate
from repro.report.publish import LateInterrupt
from repro.results.store import StoreError

EXIT_USAGE, EXIT_STORE, EXIT_INTERRUPTED = 2, 4, 130


def _one_line(text: str) -> str:
    """Control characters (a damaged name quoted in a message) escaped: every message is one line."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _shown(path: Path) -> str:
    return _one_line(path.as_posix())


def _note(text: str) -> None:
    print(f"note: {_one_line(text)}", file=sys.stderr)


def _error(text: str) -> None:
    print(f"error: {_one_line(text)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"), help="results tree to read")
    parser.add_argument("--out", type=Path, default=Path("paper"), help="folder to write the report into")
    parser.add_argument("--figures-only", action="store_true", help="regenerate figures only")
    parser.add_argument("--config-dir", type=Path, default=CONFIG_DIR, help="holds report.yaml and claims.yaml")
    args = parser.parse_args(argv)
    out = _shown(args.out)
    try:
        written = generate(args.results, args.out, args.figures_only, args.config_dir, note=_note)
    except ReportError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except StoreError as exc:
        _error(f"{exc}; {out} was left as it was")
        return EXIT_STORE
    except LateInterrupt:
        _error(f"interrupted during the final swap, which finished: {out} holds the new report")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _error(f"interrupted; {out} was left as it was")
        return EXIT_INTERRUPTED
    print(f"wrote {len(written)} files under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
