"""The code-line counter on fixtures counted by hand, the results table, and kernel budgets."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from repro.loc import counter
from repro.loc.budgets import budgets_from_config, check_budget, discover_builders
from repro.loc.cpp_lines import cpp_code_lines
from repro.loc.table import COLUMNS, build_table

FIXTURES = Path(__file__).parent / "fixtures" / "loc"
ROOT = Path(__file__).resolve().parent.parent
REQUIRED = ["implementation", "operator", "language", "role", "repo", "commit", "files",
            "function", "code_lines", "total_lines", "status", "note"]


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# sample.py, by hand: code on lines 6, 9, 12-20 (the blank line inside the string value counts,
# the backslash continuation counts twice), 23, 26-27, 30-35, 38-39, 41. Not code: docstrings
# (1-3, 10, 24), comments (4, 11, 40), blanks.
def test_python_file():
    assert counter.count_file(fixture("sample.py"), "sample.py") == counter.LineCounts(41, 23)


def test_python_builder_span_and_glue():
    kernel, glue = counter.count_definitions(fixture("sample.py"), ["builder"])
    assert kernel == counter.LineCounts(12, 10)  # lines 9-20; 10 and 11 are not code
    assert glue == counter.LineCounts(41 - 12, 23 - 10)


def test_python_span_includes_decorators():
    kernel, _ = counter.count_definitions(fixture("sample.py"), ["cached"])
    assert kernel == counter.LineCounts(4, 3)


def test_python_method_and_union_of_spans():
    kernel, _ = counter.count_definitions(fixture("sample.py"), ["Thing.method", "builder"])
    assert kernel == counter.LineCounts(2 + 12, 2 + 10)


def test_python_missing_definition():
    with pytest.raises(counter.MissingDefinition):
        counter.count_definitions(fixture("sample.py"), ["no_such_builder"])


def test_python_string_statement_after_code_is_not_a_docstring():
    text = 'x = 1\n"""a string statement, not a docstring"""\n\n# comment\n'
    assert counter.count_file(text, "m.py") == counter.LineCounts(4, 2)


# sample.cu, by hand: code on lines 4, 12-17, 20-22, 25-30 and 34. Not code: comments
# (1-3, 18-19 carried by the backslash, 31-33), the `#if 0` blocks (6-11 with their nested
# #if, 23-24), the blank line 5.
def test_cpp_file():
    text = fixture("sample.cu")
    expected = {4, 12, 13, 14, 15, 16, 17, 20, 21, 22, 25, 26, 27, 28, 29, 30, 34}
    assert cpp_code_lines(text) == expected
    assert counter.count_file(text, "sample.cu") == counter.LineCounts(34, 17)


@pytest.mark.parametrize(
    "text, code",
    [
        ('s = "/*";\nint a;\n', 2),  # a comment opener inside a string opens nothing
        ("/* a */ /* b */\nint a;\n", 1),
        ("#if 0\n#else\nint a;\n#endif\n", 3),  # #else of an #if 0 is live again
        ("#if 1\nint a;\n#endif\n", 3),
        ('x = "a\\\nb";\n', 2),  # a string continued by a backslash
    ],
)
def test_cpp_small_cases(text, code):
    assert len(cpp_code_lines(text)) == code


def test_unknown_suffix_is_an_error():
    with pytest.raises(ValueError):
        counter.count_file("x", "notes.txt")


def _entry(**overrides) -> dict:
    entry = dict(implementation="X", operator="op", language="cuda", role="upstream-cuda",
                 repo="https://github.com/o/r", commit="a" * 40, files=["k.cu"])
    return {**entry, **overrides}


def test_table_keeps_committed_rows_without_sources():
    old = {c: "" for c in COLUMNS} | {"implementation": "X", "commit": "a" * 40, "files": "k.cu",
                                      "code_lines": "7", "status": "ok"}
    kept = build_table([_entry()], None, {"X": old})
    assert kept.loc[0, "code_lines"] == 7 and kept.loc[0, "status"] == "ok"
    stale = build_table([_entry(commit="b" * 40)], None, {"X": old})
    assert stale.loc[0, "status"] == "stale" and pd.isna(stale.loc[0, "code_lines"])
    assert build_table([_entry()], None, {}).loc[0, "status"] == "no source"


def test_table_project_file_missing_is_a_row():
    entry = _entry(role="project-tilelang", files=["kernels/not_written_yet.py"], functions=["f"])
    row = build_table([entry], None, {}).iloc[0]
    assert row["status"] == "missing" and pd.isna(row["code_lines"])


def test_table_rejects_duplicate_names():
    with pytest.raises(ValueError):
        build_table([_entry(), _entry()], None, {})


def test_committed_results_cover_the_config():
    from omegaconf import OmegaConf

    config = OmegaConf.load(ROOT / "configs" / "experiment" / "loc.yaml")
    table = pd.read_csv(ROOT / "results" / "loc.csv", dtype=str, keep_default_na=False)
    assert set(REQUIRED) <= set(table.columns)
    names = [entry.implementation for entry in config.loc.implementations]
    assert sorted(names) == sorted(table["implementation"])
    upstream = table[~table["role"].str.startswith("project")]
    counted = upstream[upstream["status"] == "ok"]
    assert all(re.fullmatch(r"[0-9a-f]{40}", commit) for commit in counted["commit"])
    assert (counted["code_lines"].astype(int) > 0).all()


BUDGETS = budgets_from_config()


@pytest.mark.parametrize("key", sorted(BUDGETS))
def test_builder_within_budget(key):
    check = check_budget(key, BUDGETS[key])
    if check.code_lines is None and "does not exist" in check.reason:
        pytest.skip(check.reason)
    assert check.code_lines is not None, check.reason
    assert check.within, f"{key}: {check.code_lines} code lines > budget {check.budget}"


def test_every_tilelang_builder_has_a_budget():
    missing = sorted(set(discover_builders()) - set(BUDGETS))
    assert not missing, f"builders without a size budget in configs/experiment/loc.yaml: {missing}"
