"""Text output shared by tables, ledger and appendix: Markdown and LaTeX tables, escaping, links."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}", "≥": r"$\geq$", "≤": r"$\leq$",
                  "×": r"$\times$", "∈": r"$\in$", "·": r"$\cdot$", "–": "--", "—": "---"}


def latex_escape(text) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def markdown_escape(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A GitHub pipe table; `align` is one letter per column (l/r/c)."""
    align = align or "l" * len(header)
    rule = {"l": ":--", "r": "--:", "c": ":-:"}
    lines = ["| " + " | ".join(markdown_escape(h) for h in header) + " |",
             "| " + " | ".join(rule[a] for a in align) + " |"]
    lines += ["| " + " | ".join(markdown_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def latex_table(header: list[str], rows: list[list], caption: str, label: str,
                align: str | None = None, wrap_first: bool = True, escaped: bool = False) -> str:
    """A longtable via pandas (booktabs rules); cells are escaped unless `escaped`."""
    clean = (lambda x: str(x)) if escaped else latex_escape
    frame = pd.DataFrame([[clean(c) for c in row] for row in rows], columns=[latex_escape(h) for h in header])
    if align is None:
        # Paragraph columns that fit the text width, column padding included.
        first = 0.2 if wrap_first else 0.0
        width = round((0.84 - first) / max(1, len(header) - (1 if wrap_first else 0)), 3)
        align = (f"p{{{first}\\linewidth}}" if wrap_first else "")
        align += "".join(f"p{{{width}\\linewidth}}" for _ in header[(1 if wrap_first else 0):])
    text = frame.to_latex(index=False, escape=False, longtable=True, column_format=align,
                          caption=latex_escape(caption), label=label)
    size = "\\footnotesize" if len(header) <= 10 else "\\scriptsize"
    return "{" + size + "\n" + text + "}\n"


def write(path: Path, text: str) -> Path:
    """Write text with a trailing newline and Unix line ends (byte-stable across platforms)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((text.rstrip("\n") + "\n").encode("utf-8"))
    return path


def relative(path: str, results_parent: Path, out: Path) -> str:
    """A results-root-relative path (e.g. results/h100/gemm.csv) as a link from the paper folder."""
    return Path(os.path.relpath((results_parent / path).resolve(), out.resolve())).as_posix()
