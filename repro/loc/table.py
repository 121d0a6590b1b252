"""One row per implementation: its code lines and where they were counted from.

Upstream rows are recounted only from local clones; without one, the committed row (with its
provenance: repo, commit, files, counted_at, counter_version) is kept. The project's own rows
are recounted from the working tree every time; a file that does not exist yet gives a row with
status "missing", never an error.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from repro.loc import counter
from repro.loc.crosscheck import pygount_source_lines, span_text
from repro.loc.sources import (
    SourceUnavailable,
    UpstreamReader,
    project_commit,
    read_project_file,
)

COLUMNS = [
    "implementation", "operator", "language", "role", "backend", "repo", "ref", "commit",
    "files", "function", "counted_with", "code_lines", "kernel_code_lines", "total_lines",
    "glue_code_lines", "glue_total_lines", "pygount_source_lines", "status", "note", "counted_at",
    "counter_version",
]
# code_lines: everything counted (builders, the helpers they use, and the `with` functions: the
# scheduling and launch code a kernel needs); kernel_code_lines: the builders and their helpers only.
COUNT_COLUMNS = ["code_lines", "kernel_code_lines", "total_lines", "glue_code_lines", "glue_total_lines",
                 "pygount_source_lines"]
PROJECT_REPO = "this project"


def is_project(entry: dict) -> bool:
    return str(entry["role"]).startswith("project")


def _base_row(entry: dict) -> dict:
    row = {column: "" for column in COLUMNS}
    for key in ("implementation", "operator", "language", "role", "backend", "repo", "ref",
                "commit", "note", "status"):
        row[key] = entry.get(key) or ""
    row["files"] = ";".join(entry.get("files") or [])
    row["function"] = ";".join(entry.get("functions") or [])
    return row


def with_names(entry: dict) -> dict[str, list[str]]:
    """An entry's `with` list by file: `name` is in the entry's (one) file, `path:name` in another."""
    by_file: dict[str, list[str]] = {}
    for item in entry.get("with") or []:
        path, sep, name = str(item).rpartition(":")
        by_file.setdefault(path if sep else entry["files"][0], []).append(name)
    return by_file


def count_texts(texts: dict[str, str], functions: list[str], glue: bool,
                extra: dict[str, list[str]] | None = None) -> dict:
    """Counts for the listed files, or for the named definitions of the one Python file (the
    first of `texts`), each with the module-level helpers it uses, plus the `extra` definitions
    per file (`with`: scheduling and launch code counted beside the kernel)."""
    if not functions:
        counts = sum((counter.count_file(t, p) for p, t in texts.items()), counter.LineCounts())
        pieces = list(texts.items())
        result = {"code_lines": counts.code, "total_lines": counts.total}
    else:
        extra = dict(extra or {})
        path = next(iter(texts))
        if len(set(texts) - (set(extra) - {path})) != 1:
            raise ValueError("functions are counted in exactly one file per implementation")
        kernel, rest = counter.count_definitions(texts[path], functions, helpers=True)
        wanted = {path: list(functions) + extra.pop(path, []), **extra}
        total, pieces, counted = counter.LineCounts(), [], []
        for file, names in wanted.items():
            inside, left = counter.count_definitions(texts[file], names, helpers=True)
            total += inside
            rest = left if file == path else rest
            spans = counter.definition_spans(texts[file], names, helpers=True)
            pieces += [(file, span_text(texts[file], first, last)) for first, last in spans.values()]
            counted += [n if file == path else f"{file}:{n}" for n in spans if n not in functions]
        result = {"code_lines": total.code, "kernel_code_lines": kernel.code, "total_lines": total.total,
                  "counted_with": ";".join(counted)}
        if glue:
            result.update(glue_code_lines=rest.code, glue_total_lines=rest.total)
    result["pygount_source_lines"] = pygount_source_lines(pieces)
    return result


def _stamp(row: dict) -> dict:
    row["counted_at"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    row["counter_version"] = counter.COUNTER_VERSION
    return row


def project_row(entry: dict) -> dict:
    """Recount one of this project's kernels from the working tree; `glue_files` (host code
    in other files, e.g. shared input checks) add to the glue columns."""
    row = _base_row(entry)
    row.update(repo=PROJECT_REPO, commit=project_commit())
    glue_files = list(entry.get("glue_files") or [])
    extra = with_names(entry)
    paths = list(dict.fromkeys([*entry["files"], *extra, *glue_files]))
    texts = {path: read_project_file(path) for path in paths}
    absent = [path for path, text in texts.items() if text is None]
    if absent:
        row.update(status="missing", note=f"not in the working tree yet: {', '.join(absent)}")
        return _stamp(row)
    try:  # a glue file's functions counted `with` the kernel are not glue
        glue = [counter.count_definitions(texts[path], extra[path], helpers=True)[1] if path in extra
                else counter.count_file(texts[path], path) for path in glue_files]
    except counter.MissingDefinition:
        glue = []  # reported by _count_into below
    row = _count_into(row, {p: t for p, t in texts.items() if p not in glue_files or p in extra}, entry)
    if row["status"] == "ok" and glue:
        extra = sum(glue, counter.LineCounts())
        row["glue_code_lines"] = int(row.get("glue_code_lines") or 0) + extra.code
        row["glue_total_lines"] = int(row.get("glue_total_lines") or 0) + extra.total
        row["note"] = "; ".join(filter(None, [row["note"], "glue includes " + ", ".join(glue_files)]))
    return _stamp(row)


def _count_into(row: dict, texts: dict[str, str], entry: dict) -> dict:
    """Fill the counts, or a status saying why they could not be had."""
    try:
        row.update(count_texts(texts, list(entry.get("functions") or []), is_project(entry), with_names(entry)))
        row["status"] = "ok"
    except counter.MissingDefinition as missing:
        row.update(status="missing function", note=f"{missing.args[0]} not defined")
    except SyntaxError as error:
        row.update(status="syntax error", note=f"line {error.lineno}: {error.msg}")
    return row


def upstream_row(entry: dict, sources: Path | None, committed: dict[str, dict]) -> dict:
    """Recount from a clone under `sources`, else keep the committed row if it still matches."""
    row = _base_row(entry)
    if row["status"]:  # preset in config, e.g. "not counted": nothing read, nothing stamped
        return row
    if sources is not None:
        try:
            reader = UpstreamReader(sources, entry["repo"], entry["commit"])
            texts = {path: reader.read(path) for path in dict.fromkeys([*entry["files"], *with_names(entry)])}
        except SourceUnavailable as why:
            reader, reason = None, str(why)
        if reader is not None:
            row = _count_into(row, texts, entry)
            if not reader.verified:
                unverified = "read from a plain folder, commit not verified"
                row["note"] = "; ".join(filter(None, [row["note"], unverified]))
            return _stamp(row)
    else:
        reason = "no sources folder given"
    return _kept_row(row, committed.get(row["implementation"]), reason)


def _text(value) -> str:
    """A cell as text, every kind of empty (None, NaN, "") as ""."""
    return "" if value is None or value != value else str(value)


def _kept_row(row: dict, old: dict | None, reason: str) -> dict:
    """The committed counts, if they were made from the same commit and files."""
    if old is None:
        row.update(status="no source", note=reason)
        return row
    if [_text(old.get(k)) for k in ("commit", "files", "function")] != [
        _text(row[k]) for k in ("commit", "files", "function")
    ]:
        row.update(status="stale", note=f"config changed since counted; {reason}")
        return row
    return {column: old.get(column, "") for column in COLUMNS}


def build_table(entries: list[dict], sources: Path | None, committed: dict[str, dict]) -> pd.DataFrame:
    """All rows, in config order; implementation names must be unique."""
    names = [entry["implementation"] for entry in entries]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"implementations listed twice: {duplicates}")
    rows = [
        project_row(entry) if is_project(entry) else upstream_row(entry, sources, committed)
        for entry in entries
    ]
    table = pd.DataFrame(rows, columns=COLUMNS)
    for column in COUNT_COLUMNS:
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    return table


def read_committed(path: Path) -> dict[str, dict]:
    """Rows of an earlier results/loc.csv by implementation, as strings; {} if none."""
    if not path.is_file():
        return {}
    from repro.results.store import StoreError, read_csv_checked

    table = read_csv_checked(path).astype(str).replace("nan", "")  # a cut or unparsable file: StoreError
    if "implementation" not in table.columns or table["implementation"].duplicated().any():
        raise StoreError(f"{path}: not a line-count table (no unique `implementation` column); "
                         "move it aside or fix it, it was not overwritten")
    return {row["implementation"]: row for row in table.to_dict("records")}
