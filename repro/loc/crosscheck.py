"""A second opinion from pygount (a maintained counter built on Pygments), where installed.

It is a cross-check only: pygount files lines holding nothing but brackets or `pass` as empty
and lines holding only a string as "string", so its figures differ from ours by design (see
RULES.md). We report its source count (code + string lines) beside ours.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path, PurePosixPath


def pygount_source_lines(pieces: list[tuple[str, str]]) -> int | None:
    """Sum of pygount's source lines over (path, text) pieces; None without pygount."""
    try:
        from pygount import SourceAnalysis
    except ImportError:
        return None
    logging.getLogger("pygount").setLevel(logging.WARNING)  # it logs every file at INFO
    total = 0
    with tempfile.TemporaryDirectory() as folder:
        for index, (path, text) in enumerate(pieces):
            # pygount picks the lexer from the name, so keep the original suffix.
            file = Path(folder) / f"piece{index}{PurePosixPath(path).suffix}"
            file.write_text(text, encoding="utf-8")
            analysis = SourceAnalysis.from_file(str(file), "loc", encoding="utf-8")
            total += analysis.source_count
    return total


def span_text(text: str, first: int, last: int) -> str:
    """Lines first..last (1-based, inclusive), dedented so that a method parses on its own."""
    import textwrap

    lines = text.splitlines()[first - 1 : last]
    return textwrap.dedent("\n".join(lines)) + "\n"
