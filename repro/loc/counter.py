"""The suite's one counter of code lines, for Python and for C/C++/CUDA.

Rules (also in `repro/loc/RULES.md`, which the README quotes):

* A line is a physical line of the file (`str.splitlines()`); `total` counts them all.
* A line is **code** when it holds anything that is not blank, not a comment and not a
  docstring. A line with both code and a trailing comment is code.
* Python: comments are `#` tokens; docstrings are string-expression statements that open a
  module, class or function body. Every other string is a value and counts, every line of a
  multi-line string included. A statement continued by a backslash or inside brackets counts
  on every line that holds one of its tokens.
* C/C++/CUDA (.h .hh .hpp .cuh .cu .cpp .cc .cxx .c .inl): comments are `// ...` (carried to
  the next line by a trailing backslash) and `/* ... */`; comment markers inside string or
  character literals are code; `#if 0` blocks are not code, from the `#if 0` line to its
  `#endif` (an `#else`/`#elif` branch of it is live again). Macros are not expanded.
* A Python kernel is counted by the AST span of its builder function (decorators included,
  nested kernels inside it included) and of the module-level helpers of its file that it uses,
  transitively (functions, classes, tables); the rest of its file is its host-side glue.
* Only the files listed for an implementation are counted; libraries underneath (CUTLASS/CuTe,
  TVM, Triton's compiler) are not.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import PurePosixPath

from repro.loc.cpp_lines import cpp_code_lines
from repro.loc.python_lines import definition_rows, find_definition, module_names, python_code_lines, with_helpers

# Bump when a rule changes: committed rows carry the version that produced them.
# 2: a Python definition is counted with the module-level helpers it uses.
COUNTER_VERSION = "2"
PYTHON_SUFFIXES = frozenset({".py"})
CPP_SUFFIXES = frozenset({".h", ".hh", ".hpp", ".cuh", ".cu", ".cpp", ".cc", ".cxx", ".c", ".inl"})


@dataclass(frozen=True)
class LineCounts:
    """Physical lines and code lines of one file, span or group of them."""

    total: int = 0
    code: int = 0

    def __add__(self, other: "LineCounts") -> "LineCounts":
        return LineCounts(self.total + other.total, self.code + other.code)


class MissingDefinition(LookupError):
    """A function named in the config is not defined in its file."""


def language_of(path: str) -> str:
    """'python' or 'cpp' from the file suffix; anything else is an error, never a guess."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in PYTHON_SUFFIXES:
        return "python"
    if suffix in CPP_SUFFIXES:
        return "cpp"
    raise ValueError(f"no counting rules for {path!r} (suffix {suffix!r})")


def code_lines(text: str, path: str) -> set[int]:
    """Numbers of the code lines of a whole file."""
    if language_of(path) == "python":
        return python_code_lines(text)
    return cpp_code_lines(text)


def count_file(text: str, path: str) -> LineCounts:
    """Counts for a whole file."""
    return LineCounts(len(text.splitlines()), len(code_lines(text, path)))


def definition_spans(text: str, names: list[str], helpers: bool = False) -> dict[str, tuple[int, int]]:
    """Line spans of the named Python definitions (a module-level table by its name too), with
    `helpers` also those of the module-level helpers they use; raises MissingDefinition."""
    tree = ast.parse(text)
    defined = module_names(tree)
    for name in names:
        if find_definition(tree, name) is None and name not in defined:
            raise MissingDefinition(name)
    spans = {}
    for name in with_helpers(tree, names) if helpers else names:
        node = find_definition(tree, name) or defined[name]
        spans[name] = definition_rows(node)
    return spans


def count_definitions(text: str, names: list[str], helpers: bool = False) -> tuple[LineCounts, LineCounts]:
    """(kernel, glue): counts over the union of the named definitions' spans (with `helpers`, and
    the helpers they use), and over the rest of the file."""
    code = python_code_lines(text)
    inside: set[int] = set()
    for first, last in definition_spans(text, names, helpers).values():
        inside.update(range(first, last + 1))
    total = len(text.splitlines())
    kernel = LineCounts(len(inside), len(code & inside))
    glue = LineCounts(total - len(inside), len(code - inside))
    return kernel, glue
