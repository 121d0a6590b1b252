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
    "files", "function", "code_lines", "total_lines", "glue_code_lines", "glue_total_lines",
    "pygount_source_lines", "status", "note", "counted_at", "counter_version",
]
COUNT_COLUMNS = ["code_lines", "total_lines", "glue_code_lines", "glue_total_lines",
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


def count_texts(texts: dict[str, str], functions: list[str], glue: bool) -> dict:
    """Counts for the listed files, or for the named definitions of the one Python file."""
    if not functions:
        counts = sum((counter.count_file(t, p) for p, t in texts.items()), counter.LineCounts())
        pieces = list(texts.items())
        result = {"code_lines": counts.code, "total_lines": counts.total}
    else:
        if len(texts) != 1:
            raise ValueError("functions are counted in exactly one file per implementation")
        (path, text), = texts.items()
        kernel, rest = counter.count_definitions(text, functions)
        spans = counter.definition_spans(text, functions).values()
        pieces = [(path, span_text(text, first, last)) for first, last in spans]
        result = {"code_lines": kernel.code, "total_lines": kernel.total}
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
    texts = {path: read_project_file(path) for path in [*entry["files"], *glue_files]}
    absent = [path for path, text in texts.items() if text is None]
    if absent:
        row.update(status="missing", note=f"not in the working tree yet: {', '.join(absent)}")
        return _stamp(row)
    glue = [counter.count_file(texts.pop(path), path) for path in glue_files]
    row = _count_into(row, texts, entry)
    if row["status"] == "ok" and glue:
        extra = sum(glue, counter.LineCounts())
        row["glue_code_lines"] = int(row.get("glue_code_lines") or 0) + extra.code
        row["glue_total_lines"] = int(row.get("glue_total_lines") or 0) + extra.total
        row["note"] = "; ".join(filter(None, [row["note"], "glue includes " + ", ".join(glue_files)]))
    return _stamp(row)


def _count_into(row: dict, texts: dict[str, str], entry: dict) -> dict:
    """Fill the counts, or a status saying why they could not be had."""
    try:
        row.update(count_texts(texts, list(entry.get("functions") or []), is_project(entry)))
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
            texts = {path: reader.read(path) for path in entry["files"]}
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


def _kept_row(row: dict, old: dict | None, reason: str) -> dict:
    """The committed counts, if they were made from the same commit and files."""
    if old is None:
        row.update(status="no source", note=reason)
        return row
    if (old.get("commit"), old.get("files"), old.get("function")) != (
        row["commit"], row["files"], row["function"]
    ):
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
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    return {row["implementation"]: row for row in table.to_dict("records")}
