"""Which physical lines of a Python source hold code, and where its definitions lie.

The rules are stated once, in `repro/loc/RULES.md`; this module implements the Python half.
"""
from __future__ import annotations

import ast
import io
import tokenize

# Tokens that never make a line count: comments, line structure and the encoding marker.
_NOT_CODE = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
    tokenize.ENCODING,
}
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_SCOPES = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def docstring_rows(tree: ast.AST) -> list[tuple[int, int]]:
    """First-line/last-line pairs of every docstring: a string-expression statement that opens
    a module, class or function body. Strings anywhere else are values and count as code."""
    rows = []
    for node in ast.walk(tree):
        if not isinstance(node, _SCOPES) or not node.body:
            continue
        first = node.body[0]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            rows.append((first.lineno, first.end_lineno))
    return rows


def python_code_lines(text: str, tree: ast.AST | None = None) -> set[int]:
    """1-based numbers of the lines that hold code.

    A line holds code when a token other than a comment or line structure starts on it or spans
    it, so every line of a multi-line string value counts; docstring tokens do not."""
    tree = ast.parse(text) if tree is None else tree
    docs = docstring_rows(tree)
    code: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type in _NOT_CODE:
            continue
        first, last = tok.start[0], tok.end[0]
        if tok.type == tokenize.STRING and any(a <= first and last <= b for a, b in docs):
            continue
        code.update(range(first, last + 1))
    return code


def _defs_in(body: list[ast.stmt]):
    """Definitions in a body, also those under if/try/with blocks (optional-import guards)."""
    for stmt in body:
        if isinstance(stmt, _DEFS):
            yield stmt
        elif isinstance(stmt, (ast.If, ast.Try, ast.With)):
            for block in (stmt.body, getattr(stmt, "orelse", []), getattr(stmt, "finalbody", [])):
                yield from _defs_in(block)
            for handler in getattr(stmt, "handlers", []):
                yield from _defs_in(handler.body)


def find_definition(tree: ast.Module, qualname: str) -> ast.AST | None:
    """The function or class named `qualname` ("builder" or "Class.method"), else None."""
    node, scope = None, tree.body
    for part in qualname.split("."):
        node = next((d for d in _defs_in(scope) if d.name == part), None)
        if node is None:
            return None
        scope = node.body
    return node


def definition_rows(node: ast.AST) -> tuple[int, int]:
    """First and last line of a definition, decorators included (they configure the kernel)."""
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return first, node.end_lineno


def _is_tilelang_decorator(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    name = ast.unparse(target)
    return name.endswith("prim_func") or name in ("tilelang.jit", "jit", "tilelang.autotune")


def tilelang_builders(tree: ast.Module) -> list[str]:
    """Names of module-level functions that build a TileLang kernel: decorated as one, or
    holding a nested `@T.prim_func` definition."""
    names = []
    for node in _defs_in(tree.body):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        inner = [n for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        if any(_is_tilelang_decorator(d) for n in inner for d in n.decorator_list):
            names.append(node.name)
    return names


def module_names(tree: ast.Module) -> dict[str, ast.AST]:
    """Module-level definitions and assignments by the names they bind (the last binding wins)."""
    names: dict[str, ast.AST] = {}
    for node in _defs_in(tree.body):
        names[node.name] = node
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        names[name.id] = node
    return names


def with_helpers(tree: ast.Module, names: list[str]) -> list[str]:
    """`names` and, transitively, every module-level function, class or assignment of the same file
    that they use (a call, a decorator, a default, a table they read): the helpers a builder calls
    are counted with it. Imports are not followed: a helper in another file is listed explicitly."""
    defined = module_names(tree)
    found = list(names)
    queue = [find_definition(tree, name) or defined.get(name) for name in names]
    while queue:
        node = queue.pop()
        if node is None:
            continue
        for used in ast.walk(node):
            if isinstance(used, ast.Name) and used.id in defined and used.id not in found:
                found.append(used.id)
                queue.append(defined[used.id])
    return found
