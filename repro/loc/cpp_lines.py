"""Which physical lines of a C, C++ or CUDA source hold code.

A small lexer, not a preprocessor: it knows comments (`//`, `/* */`, a `//` comment carried on by
a trailing backslash), string and character literals (so `"//"` inside a string is code), raw
strings, digit separators, and `#if 0` blocks. Macros are not expanded and no header is followed.
The rules are stated in `repro/loc/RULES.md`.
"""
from __future__ import annotations

import re

_DIRECTIVE = re.compile(r"^\s*#\s*(\w+)\s*(.*?)\s*$")
_RAW_PREFIX = re.compile(r"(?<![\w])(?:u8|u|U|L)?R$")
_WORD_BEFORE = re.compile(r"[\w.]*$")
_OPENERS = ("if", "ifdef", "ifndef")


class _Lexer:
    """Carries the lexer state from one physical line to the next."""

    def __init__(self) -> None:
        self.state = "code"  # code | block | line | '"' | "'" | raw
        self.raw_end = ""

    def strip(self, text: str, literals: bool = True) -> str:
        """The line with comments blanked; literals are kept since they are code."""
        out: list[str] = []
        i = 0
        while i < len(text):
            i = self._step(text, i, out, literals)
        if self.state == "line" and not text.rstrip().endswith("\\"):
            self.state = "code"
        return "".join(out)

    def _step(self, text: str, i: int, out: list[str], literals: bool) -> int:
        if self.state == "line":
            return len(text)
        if self.state == "block":
            end = text.find("*/", i)
            if end < 0:
                return len(text)
            self.state = "code"
            out.append(" ")
            return end + 2
        if self.state == "raw":
            end = text.find(self.raw_end, i)
            stop = len(text) if end < 0 else end + len(self.raw_end)
            out.append(text[i:stop])
            self.state = "raw" if end < 0 else "code"
            return stop
        if self.state in ('"', "'"):
            return self._quoted(text, i, out)
        return self._code(text, i, out, literals)

    def _code(self, text: str, i: int, out: list[str], literals: bool) -> int:
        pair, char = text[i : i + 2], text[i]
        if pair == "//":
            self.state = "line"
            return len(text)
        if pair == "/*":
            self.state = "block"
            out.append(" ")
            return i + 2
        out.append(char)
        if not literals or char not in "\"'":
            return i + 1
        before = text[:i]
        if char == "'" and _WORD_BEFORE.search(before).group()[:1].isdigit():
            return i + 1  # digit separator, as in 1'000'000
        if char == '"' and _RAW_PREFIX.search(before):
            start = text.find("(", i)
            self.raw_end = ")" + text[i + 1 : start] + '"'
            self.state = "raw"
            out.append(text[i + 1 : start + 1])
            return start + 1 if start >= 0 else len(text)
        self.state = char
        return i + 1

    def _quoted(self, text: str, i: int, out: list[str]) -> int:
        """Inside a string or character literal: find its end, honouring escapes."""
        j = i
        while j < len(text):
            if text[j] == "\\":
                j += 2
                continue
            if text[j] == self.state:
                out.append(text[i : j + 1])
                self.state = "code"
                return j + 1
            j += 1
        out.append(text[i:])
        # A literal continued by a backslash goes on; an unterminated one ends with its line.
        if not text.rstrip().endswith("\\"):
            self.state = "code"
        return len(text)


def _dead_step(name: str, arg: str, depth: int) -> tuple[int, bool]:
    """New `#if 0` depth after a directive, and whether the directive's line is dead."""
    if depth == 0:
        return (1, True) if name == "if" and arg == "0" else (0, False)
    if name in _OPENERS:
        return depth + 1, True
    if name == "endif":
        return depth - 1, True
    if name in ("else", "elif") and depth == 1:
        return 0, False  # the live branch of `#if 0 ... #else` starts here
    return depth, True


def cpp_code_lines(text: str) -> set[int]:
    """1-based numbers of the lines that hold code (non-blank text outside comments and
    outside `#if 0` blocks)."""
    lexer = _Lexer()
    code: set[int] = set()
    depth = 0
    continued = False  # the previous line ended in a backslash: this one is not a new directive
    for row, raw in enumerate(text.splitlines(), start=1):
        at_start = lexer.state == "code" and not continued
        stripped = lexer.strip(raw, literals=depth == 0)
        continued = raw.rstrip().endswith("\\") and lexer.state == "code"
        match = _DIRECTIVE.match(stripped) if at_start else None
        dead = depth > 0
        if match:
            depth, dead = _dead_step(match.group(1), match.group(2), depth)
        if not dead and stripped.strip():
            code.add(row)
    return code
