"""`make baselines` on the CPU: recipes parse, the cache stamps and reuses, offline sources from a
local git repository made here, clear errors for a missing compiler or an unreachable source.
No network: every repository is a local one made in tmp_path (fetches go to file:// URLs)."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from repro.baselines import (ConfigError, UpstreamUnavailable, activate, built_baselines, import_from,
                             load_settings, upstream_example, upstream_missing)
from repro.baselines import toolchain
from repro.baselines.__main__ import main
from repro.baselines.build import build_all
from repro.baselines.progress import Progress
from repro.baselines.recipes import DEFAULT_CONFIG, default_cache_dir, parse_settings, recipe_hash

ROOT = Path(__file__).resolve().parent.parent
GIT_ENV = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main",
           "-c", "commit.gpgsign=false"]


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *GIT_ENV, "-C", str(repo), *args], capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout.strip()


def make_repo(path: Path, files: dict[str, str]) -> str:
    """A git repository with `files` committed; returns the commit."""
    path.mkdir(parents=True)
    git(path, "init", "-q")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "pinned")
    return git(path, "rev-parse", "HEAD")


SETUP_PY = """
import os
from pathlib import Path
from setuptools import setup
header = Path("vendor/dep/include/dep.h").read_text().strip()   # the submodule must be in place
flag = os.environ.get("TINY_FLAG", "unset")
Path("tinybase/_built.py").write_text(f"HEADER = {header!r}\\nFLAG = {flag!r}\\nPATCHED = MARK\\n")
setup(name="tinybase", version="1.2.3", packages=["tinybase"])
"""


@pytest.fixture
def upstream(tmp_path):
    """Two local repositories: a package (with a submodule path left empty) and its dependency,
    plus an examples repository; and a config that pins them."""
    dep = make_repo(tmp_path / "dep", {"include/dep.h": "dep-v1\n"})
    pkg = make_repo(tmp_path / "pkg", {
        "setup.py": SETUP_PY.replace("MARK", "False"),
        "tinybase/__init__.py": "from tinybase._built import HEADER, FLAG, PATCHED\n",
    })
    ex = make_repo(tmp_path / "ex", {
        "examples/demo/helper.py": "def twice(x):\n    return 2 * x\n",
        "examples/demo/kernel.py": "from helper import twice\n\ndef run(x):\n    return twice(x) + 1\n"
                                   "\nif __name__ == '__main__':\n    raise SystemExit('must not run on import')\n",
    })
    data = {
        "cache_dir": str(tmp_path / "cache"),
        "repos": {
            "pkg": {"url": f"file://{tmp_path / 'nowhere-pkg'}", "commit": pkg},
            "dep": {"url": f"file://{tmp_path / 'dep'}", "commit": dep, "paths": ["include"]},
            "ex": {"url": f"file://{tmp_path / 'nowhere-ex'}", "commit": ex, "paths": ["examples"]},
        },
        "recipes": {
            "tiny": {"kind": "wheel", "repo": "pkg", "submodules": {"vendor/dep": "dep"},
                     "patches": [{"file": "setup.py", "replace": {"PATCHED = False": "PATCHED = True"}}],
                     "env": {"TINY_FLAG": "arch{arch}"}, "imports": ["tinybase"],
                     "built": "everything, sm_{arch}", "backends": {"demo": ["tiny"]}},
            "tilelang_upstream": {"kind": "tree", "repo": "ex", "files": ["examples/demo/kernel.py"]},
        },
        "sources": {"tiny": str(tmp_path / "pkg"), "tilelang_upstream": str(tmp_path / "ex")},
        "arch": "90", "jobs": "1", "fetch_timeout_s": 60, "step_timeout_s": 300,
    }
    return tmp_path, data


def quiet():
    import io

    return Progress(2, stream=io.StringIO())


# --- recipes -----------------------------------------------------------------------------------

def test_shipped_recipes_parse_and_pin_what_loc_counts():
    settings = load_settings(DEFAULT_CONFIG)
    assert {"fa2", "fa3", "flash_mla", "tilelang_upstream", "flashinfer", "fa4", "cudnn_frontend"} <= set(settings.recipes)
    fa3 = settings.recipes["fa3"]
    assert fa3.subdir == "hopper" and fa3.env["FLASH_ATTENTION_DISABLE_BACKWARD"] == "TRUE"
    assert "FLASH_ATTENTION_DISABLE_HDIM192" not in fa3.env and "FLASH_ATTENTION_DISABLE_FP16" not in fa3.env
    assert settings.recipes["fa2"].env["FLASH_ATTN_CUDA_ARCHS"] == "{arch}"
    # the commits built are the commits whose lines the loc experiment counts
    loc = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "experiment" / "loc.yaml"))
    counted = {row["commit"] for row in loc["loc"]["implementations"] if "commit" in row}
    for name in ("flash-attention", "FlashMLA", "tilelang"):
        assert settings.repos[name].commit in counted, name


def test_overrides_and_bad_recipes_give_one_line_errors(upstream):
    _, data = upstream
    settings = parse_settings({**data, "only": "tiny"})
    assert [r.name for r in settings.selected()] == ["tiny"]
    cases = [
        ({"only": ["nope"]}, "baselines.only"),
        ({"sources": {"nope": "/x"}}, "baselines.sources.nope"),
        ({"colour": 1}, "baselines.colour"),
        ({"repos": {**data["repos"], "pkg": {"url": "u", "commit": "abc"}}}, "baselines.repos.pkg.commit"),
        ({"recipes": {"x": {"kind": "make"}}}, "baselines.recipes.x.kind"),
        ({"recipes": {"x": {"kind": "wheel", "repo": "pkg", "needs": ["cmake"]}}}, "baselines.recipes.x.needs"),
        ({"recipes": {"x": {"kind": "pip"}}}, "baselines.recipes.x.packages"),
    ]
    for change, key in cases:
        with pytest.raises(ConfigError) as err:
            parse_settings({**data, **change, "sources": change.get("sources", {})})
        assert key in str(err.value) and "\n" not in str(err.value)
    assert main(["--config", str(DEFAULT_CONFIG), "--dry-run", "only=[nope]"]) == 2


def test_recipe_hash_follows_what_changes_the_build(upstream):
    _, data = upstream
    base = parse_settings(data)
    tiny = base.recipes["tiny"]
    key = {"python": "3.12", "torch": "2.11", "arch": "90", "cuda": "13.0"}
    assert recipe_hash(tiny, base, key) == recipe_hash(tiny, parse_settings(data), key)
    described = parse_settings({**data, "recipes": {**data["recipes"], "tiny": {
        **data["recipes"]["tiny"], "built": "other words", "title": "T", "expect_min": 3}}})
    assert recipe_hash(described.recipes["tiny"], described, key) == recipe_hash(tiny, base, key)
    flagged = parse_settings({**data, "recipes": {**data["recipes"], "tiny": {
        **data["recipes"]["tiny"], "env": {"TINY_FLAG": "other"}}}})
    assert recipe_hash(flagged.recipes["tiny"], flagged, key) != recipe_hash(tiny, base, key)
    assert recipe_hash(tiny, base, {**key, "torch": "2.12"}) != recipe_hash(tiny, base, key)


def test_cache_dir_from_key_then_env(monkeypatch, tmp_path):
    monkeypatch.setenv("REPRO_BASELINES", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    assert default_cache_dir(str(tmp_path / "key")) == tmp_path / "key"
    monkeypatch.delenv("REPRO_BASELINES")
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" / "baselines"


# --- building, the cache and its reuse ------------------------------------------------------------

def test_build_from_local_clones_then_reuse(upstream):
    tmp_path, data = upstream
    settings = parse_settings(data)
    records = {r["name"]: r for r in build_all(settings, quiet())}
    tiny = records["tiny"]
    assert tiny["outcome"] == "built", tiny.get("error")
    assert [s["step"] for s in tiny["steps"]] == ["source", "prepare", "compile", "install", "check"]
    assert tiny["version"] == "1.2.3" and tiny["built"] == "everything, sm_90"
    assert tiny["source"] == "clone pkg" and tiny["env"] == {"TINY_FLAG": "arch90"}
    built = Path(tiny["site"]) / "tinybase" / "_built.py"
    assert "HEADER = 'dep-v1'" in built.read_text()          # submodule placed from its own repo
    assert "FLAG = 'arch90'" in built.read_text()            # recipe env reached the build
    assert "PATCHED = True" in built.read_text()             # patch applied to the build copy
    assert "PATCHED = False" in (tmp_path / "pkg" / "setup.py").read_text()  # the clone is untouched
    assert records["tilelang_upstream"]["outcome"] == "built"

    again = {r["name"]: r for r in build_all(parse_settings(data), quiet())}
    assert again["tiny"]["outcome"] == "reused" and again["tilelang_upstream"]["outcome"] == "reused"
    changed = parse_settings({**data, "recipes": {**data["recipes"], "tiny": {
        **data["recipes"]["tiny"], "env": {"TINY_FLAG": "second"}}}})
    rebuilt = build_all(changed, quiet())[0]
    assert rebuilt["outcome"] == "built" and "FLAG = 'second'" in built.read_text()


def test_records_for_the_manifest_and_activate(upstream):
    tmp_path, data = upstream
    settings = parse_settings(data)
    build_all(settings, quiet())
    records = built_baselines(settings.cache_dir)
    assert [r["name"] for r in records] == ["tilelang_upstream", "tiny"]
    text = json.dumps(records)
    assert str(settings.cache_dir) not in text and str(tmp_path / "pkg") not in text  # no local folder
    tiny = next(r for r in records if r["name"] == "tiny")
    assert tiny["status"] == "ok" and tiny["commit"] == data["repos"]["pkg"]["commit"]
    assert {s["step"] for s in tiny["steps"]} >= {"compile", "install"} and tiny["seconds"] > 0
    before = list(sys.path)
    try:
        added = activate(settings.cache_dir)
        assert len(added) == 1 and activate(settings.cache_dir) == []
        module = import_from("tiny", "tinybase", settings.cache_dir)
        assert module.FLAG == "arch90"
    finally:
        sys.path[:] = before
        sys.modules.pop("tinybase", None)
        sys.modules.pop("tinybase._built", None)


def test_source_archive_and_sources_dir(upstream):
    tmp_path, data = upstream
    commit = data["repos"]["ex"]["commit"]
    folder = tmp_path / "third_party"
    folder.mkdir()
    git(tmp_path / "ex", "archive", "--format=tar.gz", f"--prefix=ex-{commit[:7]}/",
        "-o", str(folder / f"ex-{commit[:7]}.tar.gz"), commit)
    settings = parse_settings({**data, "sources": {}, "sources_dir": str(folder), "only": ["tilelang_upstream"]})
    record = build_all(settings, quiet())[0]
    assert record["outcome"] == "built" and record["source"] == f"archive ex-{commit[:7]}.tar.gz"
    module = upstream_example("examples/demo/kernel.py", settings.cache_dir)
    assert module.run(20) == 41                              # its neighbour `helper` was found
    assert upstream_missing("examples/demo/absent.py", settings.cache_dir).startswith("examples/demo/absent.py")


def test_upstream_example_says_why_when_not_built(tmp_path):
    with pytest.raises(UpstreamUnavailable, match="not built"):
        upstream_example("examples/demo/kernel.py", tmp_path / "empty")
    assert "make baselines" in upstream_missing("examples/x.py", tmp_path / "empty")


def test_clone_without_the_pinned_commit(upstream):
    tmp_path, data = upstream
    repos = {**data["repos"], "ex": {**data["repos"]["ex"], "commit": "1" * 40}}
    settings = parse_settings({**data, "repos": repos, "only": ["tilelang_upstream"]})
    record = build_all(settings, quiet())[0]
    assert record["outcome"] == "failed" and "lacks commit 1111111" in record["error"]


# --- clear errors ------------------------------------------------------------------------------------

def write_config(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "baselines.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create({"baselines": data})))
    return path


def test_unreachable_source_is_one_error_line_and_nonzero(upstream, capsys):
    tmp_path, data = upstream
    config = write_config(tmp_path, {**data, "sources": {}, "only": ["tilelang_upstream"]})
    assert main(["--config", str(config)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    assert "cannot fetch file://" in err[0] and "baselines.sources.ex=PATH" in err[0]


def test_missing_compiler_fails_that_baseline_and_the_rest_go_on(upstream, monkeypatch, capsys):
    tmp_path, data = upstream
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    recipes = {**data["recipes"], "tiny": {**data["recipes"]["tiny"], "needs": ["g++"]}}
    config = write_config(tmp_path, {**data, "recipes": recipes})
    assert main(["--config", str(config)]) == 1
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert err == [f"error: tiny: g++ not found ({toolchain.HINTS['g++']})"]
    assert "tilelang_upstream  built" in captured.out       # the other baseline was still built
    monkeypatch.setattr(toolchain, "cuda_home", lambda: None)
    assert toolchain.missing_tools(("nvcc",)).startswith("nvcc not found")
    assert toolchain.missing_tools(("python:no_such_module_x",)) == \
        "python module no_such_module_x not found (pip install no_such_module_x)"
    assert toolchain.missing_tools(("python:json",)) is None


def test_dry_run_prints_the_plan_and_touches_nothing(upstream, capsys):
    tmp_path, data = upstream
    config = write_config(tmp_path, data)
    assert main(["--config", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "build" in out and "clone pkg" in out and "TINY_FLAG=arch90" in out
    assert "vendor/dep: dep @" in out and "enables  demo: tiny" in out
    assert not (tmp_path / "cache").exists()


def test_patch_that_no_longer_applies_is_reported(upstream):
    _, data = upstream
    recipes = {**data["recipes"], "tiny": {**data["recipes"]["tiny"],
                                           "patches": [{"file": "setup.py", "replace": {"NOT THERE": "x"}}]}}
    record = build_all(parse_settings({**data, "recipes": recipes, "only": ["tiny"]}), quiet())[0]
    assert record["outcome"] == "failed" and "setup.py has no 'NOT THERE'" in record["error"]


def test_shipped_plan_names_every_source(capsys, tmp_path):
    third = tmp_path / "tp"
    third.mkdir()
    for name in ("flash-attention-060c918", "cutlass-fa-dc48179", "FlashMLA-9241ae3", "cutlass-mla-147f567",
                 "tilelang-a35008a", "DeepGEMM-d30fc36", "cutlass-deepgemm-f3fde58", "fmt-553ec11"):
        with tarfile.open(third / f"{name}.tar.gz", "w:gz"):
            pass
    assert main(["--dry-run", f"sources_dir={third}", f"cache_dir={tmp_path / 'c'}"]) == 0
    out = capsys.readouterr().out
    # fa2, fa2_bwd, fa3, fa3_bwd: 2 each; flash_mla 2; tilelang_upstream 1; deepgemm 3
    assert out.count("from archive") == 14 and "git fetch" not in out and "expected: about" in out
