"""Size budgets for this project's TileLang kernel builders (claims C1, C2: "under 100 lines").

A budget key is `<file>:<builder>`, or `<file>:<builder>+<builder>` for kernels that only work
together (MLA decode's split and combine); its value is the most code lines the builders may have,
counted as the ledger counts them: each builder with the module-level helpers it uses. The test
suite checks every budget, and that every builder found in `kernels/` is in one, so that a kernel
growing (or a new one) is a visible decision in config.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from repro.loc import counter
from repro.loc.python_lines import tilelang_builders
from repro.loc.sources import PROJECT_ROOT, read_project_file

DEFAULT_LIMIT = 100


@dataclass(frozen=True)
class BudgetCheck:
    key: str
    budget: int
    code_lines: int | None  # None: file or builder not there
    reason: str = ""

    @property
    def within(self) -> bool:
        return self.code_lines is not None and self.code_lines <= self.budget


def check_budget(key: str, budget: int) -> BudgetCheck:
    """Count one `<file>:<builder>[+<builder>...]` against its budget."""
    path, _, names = key.partition(":")
    text = read_project_file(path)
    if text is None:
        return BudgetCheck(key, budget, None, f"{path} does not exist yet")
    try:
        kernel, _glue = counter.count_definitions(text, names.split("+"), helpers=True)
    except counter.MissingDefinition as missing:
        return BudgetCheck(key, budget, None, f"{missing.args[0]} is not defined in {path}")
    return BudgetCheck(key, budget, kernel.code)


def budgeted_builders(budgets: dict[str, int]) -> set[str]:
    """`<file>:<builder>` for every builder some budget key covers."""
    covered = set()
    for key in budgets:
        path, _, names = key.partition(":")
        covered |= {f"{path}:{name}" for name in names.split("+")}
    return covered


def discover_builders(folder: str = "kernels") -> list[str]:
    """`<file>:<builder>` for every TileLang builder in the folder's Python files (not
    subfolders: kernels/triton holds Triton kernels)."""
    keys = []
    for file in sorted((PROJECT_ROOT / folder).glob("*.py")):
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except SyntaxError:
            continue  # reported by the kernel's own tests, not here
        relative = file.relative_to(PROJECT_ROOT).as_posix()
        keys += [f"{relative}:{name}" for name in tilelang_builders(tree)]
    return keys


def budgets_from_config(path: Path | None = None) -> dict[str, int]:
    """The `loc.budgets` mapping of configs/experiment/loc.yaml."""
    from omegaconf import OmegaConf

    config = OmegaConf.load(path or PROJECT_ROOT / "configs" / "experiment" / "loc.yaml")
    return {str(k): int(v) for k, v in (config.loc.get("budgets") or {}).items()}
