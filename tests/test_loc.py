"""The code-line counter on fixtures counted by hand, the results table, and kernel budgets."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from repro.loc import counter
from repro.loc.budgets import budgeted_builders, budgets_from_config, check_budget, discover_builders
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
    # As read back from results/loc.csv, an upstream row's empty `function` is NaN, not "": the
    # committed counts are still kept (they were once all marked stale and blanked).
    read_back = build_table([_entry()], None, {"X": {**old, "function": float("nan")}})
    assert read_back.loc[0, "code_lines"] == 7 and read_back.loc[0, "status"] == "ok"


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
    missing = sorted(set(discover_builders()) - budgeted_builders(BUDGETS))
    assert not missing, f"builders without a size budget in configs/experiment/loc.yaml: {missing}"


# Like for like: a builder is counted with the module-level helpers it uses, and `with` adds the
# scheduling and launch code its kernel needs (issue 12).

HELPERS = '''\
import math

TABLE = {1: 2}


def helper(x):
    return x + 1


def builder(n):
    """A builder."""
    return helper(TABLE[n])


def plan(n):
    return math.ceil(n / 2)


def wrapper(n):
    return builder(plan(n))
'''


def test_helpers_a_builder_uses_are_counted_with_it():
    alone, _ = counter.count_definitions(HELPERS, ["builder"])
    assert alone == counter.LineCounts(3, 2)
    kernel, glue = counter.count_definitions(HELPERS, ["builder"], helpers=True)
    assert kernel.code == 2 + 2 + 1  # builder, helper, TABLE; never the import
    assert glue.code == counter.count_file(HELPERS, "m.py").code - kernel.code


def test_with_counts_scheduling_and_launch_code_beside_the_kernel():
    from repro.loc.table import count_texts

    counts = count_texts({"k.py": HELPERS}, ["builder"], True, {"k.py": ["wrapper"]})
    assert counts["kernel_code_lines"] == 5
    assert counts["code_lines"] == 5 + 2 + 2  # + wrapper and the plan it calls
    assert set(counts["counted_with"].split(";")) == {"helper", "TABLE", "wrapper", "plan"}


def test_with_reaches_a_helper_in_another_project_file(monkeypatch):
    from repro.loc import table

    files = {"kernels/k.py": HELPERS, "kernels/common.py": "def split(n):\n    return n // 2\n\n\nX = 1\n"}
    monkeypatch.setattr(table, "read_project_file", files.get)
    entry = _entry(role="project-tilelang", files=["kernels/k.py"], functions=["builder"],
                   glue_files=["kernels/common.py"], **{"with": ["wrapper", "kernels/common.py:split"]})
    row = build_table([entry], None, {}).iloc[0]
    assert row["status"] == "ok", row["note"]
    assert row["kernel_code_lines"] == 5 and row["code_lines"] == 5 + 4 + 2
    assert "kernels/common.py:split" in row["counted_with"]
    assert row["glue_code_lines"] == 1 + 1  # k.py's import, common.py's X: split is not glue


def test_a_missing_with_function_is_a_status_not_a_count(monkeypatch):
    from repro.loc import table

    monkeypatch.setattr(table, "read_project_file", {"kernels/k.py": HELPERS}.get)
    entry = _entry(role="project-tilelang", files=["kernels/k.py"], functions=["builder"], **{"with": ["nope"]})
    row = build_table([entry], None, {}).iloc[0]
    assert row["status"] == "missing function" and pd.isna(row["code_lines"])


def test_a_budget_may_cover_builders_that_work_together():
    assert budgeted_builders({"k.py:a+b": 160, "g.py:c": 100}) == {"k.py:a", "k.py:b", "g.py:c"}
    assert BUDGETS.get("kernels/mla_decode.py:mla_decode_split_kv+mla_decode_combine") == 160
    assert not any(key.startswith("kernels/mla_decode.py:") and "+" not in key for key in BUDGETS)


def test_tilelang_entries_count_their_scheduling_and_launch_code():
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "experiment" / "loc.yaml"))
    tilelang = {e["implementation"]: e for e in config["loc"]["implementations"]
                if e["role"] == "project-tilelang" and e.get("backend") == "tilelang"}
    assert len(tilelang) >= 6
    for name, entry in tilelang.items():
        assert entry.get("with"), f"{name}: no `with` list (its knob choice, planning and wrapper)"
    table = pd.read_csv(ROOT / "results" / "loc.csv", dtype=str, keep_default_na=False).set_index("implementation")
    for name in tilelang:
        row = table.loc[name]
        if row["status"] == "ok":
            assert int(row["code_lines"]) > int(row["kernel_code_lines"]), name
            assert row["counter_version"] == counter.COUNTER_VERSION, name
