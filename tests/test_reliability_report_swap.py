"""Where the report writes: a bad --out is refused before any work, Ctrl-C leaves paper/ as it was,
and a kill at any step of the final swap leaves paper/ whole (the old or the new, never none or a
mix), also once the next run has put right what the killed one left.

The kills are injected, not timed: a forked process runs the report with a hook on the swap's
steps (repro.report.publish.on_step) that ends it (os._exit) or sends it SIGINT at one step.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import NamedTuple

import pytest

from repro.report import build
from repro.report.__main__ import main
from tests.helpers import tree_files

RUN = "run-a"


def _publish():
    """The swap's module (imported here: the tests of behaviour run on any version)."""
    from repro.report import publish

    return publish


def _results(base: Path) -> Path:
    folder = base / "results" / "h100"
    folder.mkdir(parents=True)
    with open(folder / "gemm.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["experiment", "case", "backend", "status", "median_ms",
                                                    "tflops", "run_id", "M"])
        writer.writeheader()
        for m in (1024, 4096):
            for backend, ms in (("cublas", 1.0), ("tilelang", 0.8)):
                writer.writerow({"experiment": "gemm", "case": f"M={m}", "backend": backend, "status": "ok",
                                 "median_ms": ms, "tflops": 2.0 / ms, "run_id": RUN, "M": m})
    (folder / f"env-{RUN}.json").write_text(json.dumps({"run_id": RUN, "timestamp": "2026-01-02T03:04:05"}))
    return base / "results"


def _old_paper(base: Path) -> dict[str, bytes]:
    out = base / "paper"
    (out / "tables").mkdir(parents=True)
    (out / "figures").mkdir()
    (out / "README.md").write_text("the paper as it was\n")
    (out / "main.tex").write_text("hand-written\n")
    (out / "tables" / "gemm.md").write_text("| old |\n")
    (out / "figures" / "gemm-h100.png").write_bytes(b"an old figure")
    return tree_files(out)


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(build, "make_figures", lambda *args: [])


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line]


# 7. A bad --out: one `error:` line, exit 2, before any work.

def _dot(base: Path) -> Path:
    return Path(".")


def _missing_parent(base: Path) -> Path:
    return base / "no" / "such" / "paper"


def _parent_is_a_file(base: Path) -> Path:
    (base / "notes.txt").write_text("a file\n")
    return base / "notes.txt" / "paper"


def _dangling(base: Path) -> Path:
    (base / "paper").symlink_to(base / "nowhere")
    return base / "paper"


def _loop(base: Path) -> Path:
    (base / "paper").symlink_to(base / "paper")
    return base / "paper"


def _link_to_a_folder(base: Path) -> Path:
    (base / "real").mkdir()
    (base / "paper").symlink_to(base / "real")
    return base / "paper"


def _too_long(base: Path) -> Path:
    return base / ("p" * 240)


def _far_too_long(base: Path) -> Path:
    return base / ("p" * 300)


def _the_results(base: Path) -> Path:
    return base / "results"


def _inside_the_results(base: Path) -> Path:
    return base / "results" / "paper"


@pytest.mark.parametrize("make, says", [
    (_dot, "names no folder of its own"),
    (_missing_parent, "does not exist"),
    (_parent_is_a_file, "is not a folder"),
    (_dangling, "leads nowhere"),
    (_loop, "leads nowhere"),
    (_link_to_a_folder, "a symbolic link"),
    (_too_long, "too long"),
    (_far_too_long, "too long"),
    (_the_results, "overlaps the results"),
    (_inside_the_results, "overlaps the results"),
])
def test_a_bad_out_is_one_error_line_before_any_work(tmp_path, capsys, monkeypatch, make, says):
    _results(tmp_path)
    monkeypatch.chdir(tmp_path)
    out = make(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))

    def no_work(*args, **kwargs):
        raise AssertionError("results read before --out was checked")

    monkeypatch.setattr(build, "load", no_work)
    code = main(["--results", "results", "--out", str(out)])
    err = _errors(capsys)
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: --out") and says in err[0], err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def _read_only_run(results: Path, out: Path, capsys, monkeypatch) -> list[str]:
    monkeypatch.setattr(build, "load", lambda *a: pytest.fail("results read before --out was checked"))
    code = main(["--results", str(results), "--out", str(out)])
    err = _errors(capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --out"), err
    return err


@pytest.mark.skipif(os.geteuid() == 0, reason="no folder is read-only for root")
def test_a_read_only_parent_is_one_error_line(tmp_path, capsys, monkeypatch):
    results = _results(tmp_path)
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    shelf.chmod(0o555)
    try:
        assert "read-only" in _read_only_run(results, shelf / "paper", capsys, monkeypatch)[0]
        assert list(shelf.iterdir()) == []
    finally:
        shelf.chmod(0o755)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_folder_the_file_system_will_not_write_in_is_one_error_line(tmp_path, capsys, monkeypatch):
    err = _read_only_run(_results(tmp_path), Path("/proc/paper"), capsys, monkeypatch)  # even for root
    assert "cannot write in /proc" in err[0]


def test_a_read_only_file_system_is_one_error_line(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    err = _read_only_run(_results(tmp_path), tmp_path / "paper", capsys, monkeypatch)
    assert "cannot write in" in err[0] and "Read-only file system" in err[0]
    assert _left(tmp_path) == ["results"]


def test_an_unreadable_old_paper_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    results = _results(tmp_path)
    _old_paper(tmp_path)
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path).name != "paper")
    monkeypatch.setattr(build, "load", lambda *a: pytest.fail("results read before --out was checked"))
    assert main(["--results", str(results), "--out", str(tmp_path / "paper")]) == 2
    assert "cannot be read" in _errors(capsys)[0]


# The subprocess (a fork of this one: no start-up to wait for) that runs the report and stops at
# one step: ended there by os._exit (a kill), or sent SIGINT there (a Ctrl-C).

class Done(NamedTuple):
    returncode: int
    stderr: str


def _child(base: Path, point: str, mode: str, how: str) -> int:
    from repro.report import publish  # in the child: a version without it fails here, as it should

    build.make_figures = lambda *args: []
    if mode == "fallback":
        publish.exchange = lambda a, b: False  # as where the kernel or file system cannot exchange

    def stop(name, path=None):
        if name != point:
            return
        if how == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
            return
        if name == "removing" and path is not None:  # killed with half of the folder already gone
            for i, item in enumerate(sorted(Path(path).rglob("*"), reverse=True)):
                if i % 2 == 0 and item.is_file():
                    item.unlink()
        os._exit(99)

    publish.on_step = stop
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return main(["--results", str(base / "results"), "--out", str(base / "paper")])


def _run(base: Path, point: str, mode: str = "exchange", how: str = "kill") -> Done:
    fd, err = tempfile.mkstemp(prefix="report-stderr-")
    os.close(fd)
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        try:
            sys.stdout = open(os.devnull, "w")
            sys.stderr = open(err, "w")
            code = _child(base, point, mode, how)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    text = Path(err).read_text()
    os.unlink(err)
    return Done(os.waitstatus_to_exitcode(status), text)


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The old paper and the new one the report makes of it (at the same depth: same relative links)."""
    base = tmp_path_factory.mktemp("reference")
    old = _old_paper(base)
    _results(base)
    done = _run(base, "never")
    assert done.returncode == 0, done.stderr
    new = tree_files(base / "paper")
    assert new != old and new["main.tex"] == b"hand-written\n"
    return old, new


def _left(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir())


def _after_kill(base: Path, versions, expect: str) -> None:
    """paper/ is whole now (or put back by recovery), then the next run makes the new one, tidily."""
    old, new = versions
    paper = base / "paper"
    if expect == "gone-until-recovered":  # the rename fallback, killed between its two renames
        assert not paper.exists()
        _publish().recover(paper)
        expect = "old"
    assert tree_files(paper) == {"old": old, "new": new}[expect]
    notes = _publish().recover(paper)
    assert tree_files(paper) == {"old": old, "new": new}[expect]  # recovery never makes it worse
    assert _left(base) == ["paper", "results"], notes
    assert main(["--results", str(base / "results"), "--out", str(paper)]) == 0  # the next run (quick)
    assert tree_files(paper) == new and _left(base) == ["paper", "results"]


# 6. A kill at each step of the swap.

@pytest.mark.parametrize("mode, point, expect", [
    ("exchange", "loaded", "old"),
    ("exchange", "built", "old"),
    ("exchange", "publishing", "old"),
    ("exchange", "exchanged", "new"),
    ("exchange", "removing", "new"),  # the old paper half removed
    ("exchange", "done", "new"),
    ("fallback", "publishing", "old"),
    ("fallback", "moved-aside", "gone-until-recovered"),
    ("fallback", "moved-in", "new"),
    ("fallback", "removing", "new"),
    ("fallback", "done", "new"),
])
def test_a_kill_at_any_step_leaves_a_whole_paper(tmp_path, quick, versions, mode, point, expect):
    _old_paper(tmp_path)
    _results(tmp_path)
    done = _run(tmp_path, point, mode)
    assert done.returncode == 99, done.stderr
    _after_kill(tmp_path, versions, expect)


def test_the_next_run_recovers_without_help(tmp_path, versions):
    _old_paper(tmp_path)
    _results(tmp_path)
    assert _run(tmp_path, "moved-aside", "fallback").returncode == 99
    assert not (tmp_path / "paper").exists()
    done = _run(tmp_path, "never")  # no separate recovery: the run itself puts the old one back first
    assert done.returncode == 0, done.stderr
    assert "restored from .paper.old-" in done.stderr
    assert tree_files(tmp_path / "paper") == versions[1] and _left(tmp_path) == ["paper", "results"]


def test_a_kill_before_a_first_report_is_in_place_leaves_none(tmp_path):
    _results(tmp_path)
    assert _run(tmp_path, "publishing").returncode == 99
    assert not (tmp_path / "paper").exists()
    _publish().recover(tmp_path / "paper")  # the half-made build goes; there was no old one to put back
    assert _left(tmp_path) == ["results"]


def test_a_kill_after_a_first_report_is_in_place_leaves_it_whole(tmp_path, versions):
    _results(tmp_path)
    assert _run(tmp_path, "renamed").returncode == 99
    generated = {k: v for k, v in versions[1].items() if k != "main.tex"}  # the only hand-written file
    assert tree_files(tmp_path / "paper") == generated and _left(tmp_path) == ["paper", "results"]


# 7. Ctrl-C: one line, exit 130, paper/ as it was.

@pytest.mark.parametrize("point", ["loaded", "built"])
def test_ctrl_c_during_the_report_leaves_the_paper_as_it_was(tmp_path, versions, point):
    _old_paper(tmp_path)
    _results(tmp_path)
    done = _run(tmp_path, point, how="sigint")
    err = [line for line in done.stderr.splitlines() if line]
    assert done.returncode == 130, done.stderr
    assert err == [f"error: interrupted; {tmp_path / 'paper'} was left as it was"]
    assert tree_files(tmp_path / "paper") == versions[0] and _left(tmp_path) == ["paper", "results"]


@pytest.mark.parametrize("mode", ["exchange", "fallback"])
def test_ctrl_c_during_the_swap_lets_it_finish(tmp_path, versions, mode):
    _old_paper(tmp_path)
    _results(tmp_path)
    done = _run(tmp_path, "moved-aside" if mode == "fallback" else "publishing", mode, how="sigint")
    err = [line for line in done.stderr.splitlines() if line]
    assert done.returncode == 130, done.stderr
    assert len(err) == 1 and "interrupted during the final swap" in err[0]
    assert tree_files(tmp_path / "paper") == versions[1] and _left(tmp_path) == ["paper", "results"]


def test_ctrl_c_in_process_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    results = _results(tmp_path)
    before = _old_paper(tmp_path)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "make_figures", interrupted)
    try:
        code = main(["--results", str(results), "--out", str(tmp_path / "paper")])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped the report as a traceback")
    assert code == 130
    assert _errors(capsys) == [f"error: interrupted; {tmp_path / 'paper'} was left as it was"]
    assert tree_files(tmp_path / "paper") == before and _left(tmp_path) == ["paper", "results"]
