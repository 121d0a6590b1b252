"""The DeepGEMM, FA3-with-backward and FA2-with-backward recipes, and the rule that keeps two builds
of the same modules (fa3 / fa3_bwd, fa2 / fa2_bwd) off the path together. CPU only; the checks
against the pinned upstream trees run where their source archives are in third_party/."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from repro.baselines import ConfigError, activate, built_baselines, import_from, load_settings
from repro.baselines.__main__ import main
from repro.baselines.build import build_all
from repro.baselines.cache import USE_ENV, active_names, write_stamp
from repro.baselines.progress import Progress
from repro.baselines.recipes import DEFAULT_CONFIG, parse_settings

ROOT = Path(__file__).resolve().parent.parent
THIRD_PARTY = ROOT / "third_party"


# --- the shipped recipes ---------------------------------------------------------------------------

def test_fa3_bwd_is_fa3_with_the_backward_for_head_dims_64_and_128():
    settings = load_settings(DEFAULT_CONFIG)
    fa3, bwd = settings.recipes["fa3"], settings.recipes["fa3_bwd"]
    assert (bwd.repo, bwd.subdir, bwd.submodules, bwd.patches, bwd.archs, bwd.imports) == \
        (fa3.repo, fa3.subdir, fa3.submodules, fa3.patches, fa3.archs, fa3.imports)
    dropped = {"FLASH_ATTENTION_DISABLE_BACKWARD"}
    added = {"FLASH_ATTENTION_DISABLE_HDIM192", "FLASH_ATTENTION_DISABLE_HDIM256"}
    assert set(bwd.env) == (set(fa3.env) - dropped) | added
    assert all(bwd.env[k] == fa3.env[k] for k in set(fa3.env) - dropped)
    assert not {k for k in bwd.env if re.fullmatch(r"FLASH_ATTENTION_DISABLE_HDIM(64|128)", k)}
    assert bwd.backends["flash_attention_bwd"] == ["fa3"] and bwd.backends["flash_attention"] == ["fa3"]


def test_fa2_bwd_keeps_the_backward_and_drops_only_other_head_dims():
    settings = load_settings(DEFAULT_CONFIG)
    fa2, bwd = settings.recipes["fa2"], settings.recipes["fa2_bwd"]
    assert (bwd.repo, bwd.submodules, bwd.imports) == (fa2.repo, fa2.submodules, fa2.imports)
    assert bwd.archs == ("90",) and bwd.env["FLASH_ATTN_CUDA_ARCHS"] == "90"
    setup = next(p["replace"] for p in bwd.patches if p["file"] == "setup.py")
    assert not any("DISABLE_BACKWARD" in new for new in setup.values())
    # fa2's other switches, as fa2 sets them
    fa2_setup = next(p["replace"] for p in fa2.patches if p["file"] == "setup.py")
    assert {k: v for k, v in fa2_setup.items() if "BACKWARD" not in k} == \
        {k: v for k, v in setup.items() if "DISABLE" in k}
    removed = {k for k, v in setup.items() if "flash_bwd_hdim" in k and v == ""}
    assert {re.search(r"hdim(\d+)", k).group(1) for k in removed} == {"32", "96", "192", "256"}
    assert len(removed) == 16  # fp16/bf16 x causal or not


def test_deepgemm_recipe_pins_its_submodules_and_checks_its_installed_headers():
    settings = load_settings(DEFAULT_CONFIG)
    dg = settings.recipes["deepgemm"]
    assert dg.kind == "wheel" and dg.archs == ("90",) and dg.imports == ("deep_gemm",)
    assert dg.submodules == {"third-party/cutlass": "cutlass-deepgemm", "third-party/fmt": "fmt"}
    assert settings.repos["DeepGEMM"].commit == "d30fc36c8f229f4f873b90a492f6e19e6e610923"
    assert settings.repos["cutlass-deepgemm"].commit == "f3fde58372d33e9a5650ba7b80fc48b3b49d40c8"
    assert settings.repos["fmt"].commit == "553ec11ec06fbe0beebfbb45f9dc3c9eabd83d28"
    assert dg.env["DG_FORCE_BUILD"] == "1"  # never a downloaded release wheel
    assert {f.split("/")[2] for f in dg.files} == {"deep_gemm", "cute", "cutlass"}
    assert "JIT" in dg.built and "nvcc" in dg.built
    assert dg.backends == {"gemm": ["deepgemm"], "dsa_indexer": ["deepgemm"]}


def test_conflicts_are_symmetric_and_the_config_picks_one_of_each():
    settings = load_settings(DEFAULT_CONFIG)
    assert settings.recipes["fa3"].conflicts == ("fa3_bwd",) and settings.recipes["fa3_bwd"].conflicts == ("fa3",)
    assert settings.recipes["fa2"].conflicts == ("fa2_bwd",)
    assert settings.use == ["fa3", "fa2"]


# --- against the pinned upstream trees (skipped without the archives) ------------------------------

def _member(archive: Path, path: str) -> str:
    with tarfile.open(archive) as tar:
        name = next(n for n in tar.getnames() if n.split("/", 1)[-1] == path)
        return tar.extractfile(name).read().decode()


def _archive(name: str) -> Path:
    path = THIRD_PARTY / f"{name}.tar.gz"
    if not path.is_file():
        pytest.skip(f"{path.name} not in third_party/ (docs/baselines.md: offline sources)")
    return path


def test_fa2_bwd_patches_apply_and_leave_exactly_the_64_128_backward():
    archive = _archive("flash-attention-060c918")
    recipe = load_settings(DEFAULT_CONFIG).recipes["fa2_bwd"]
    texts = {}
    for patch in recipe.patches:
        text = _member(archive, patch["file"])
        for old, new in patch["replace"].items():
            assert text.count(old) == 1, (patch["file"], old)
            text = text.replace(old, new)
        texts[patch["file"]] = text
    cuda_sources = texts["setup.py"].split('name="flash_attn_2_cuda"')[1].split("extra_compile_args")[0]
    bwd = set(re.findall(r"flash_bwd_hdim(\d+)_(fp16|bf16)(_causal)?_sm80\.cu", cuda_sources))
    assert bwd == {(d, t, c) for d in ("64", "128") for t in ("fp16", "bf16") for c in ("", "_causal")}
    assert "-DFLASHATTENTION_DISABLE_BACKWARD" not in cuda_sources.replace('# "-DFLASHATTENTION_DISABLE_BACKWARD"', "")
    assert "if constexpr (kHeadDim == 64 || kHeadDim == 128)" in texts["csrc/flash_attn/flash_api.cpp"]


def test_fa3_bwd_switches_exist_in_the_pinned_setup():
    setup = _member(_archive("flash-attention-060c918"), "hopper/setup.py")
    recipe = load_settings(DEFAULT_CONFIG).recipes["fa3_bwd"]
    for key in recipe.env:
        if key.startswith("FLASH_ATTENTION_DISABLE_"):
            assert f'os.getenv("{key}"' in setup, key


def test_deepgemm_setup_installs_the_headers_its_jit_reads():
    setup = _member(_archive("DeepGEMM-d30fc36"), "setup.py")
    assert "'third-party/cutlass/include/cute'" in setup and "'third-party/cutlass/include/cutlass'" in setup
    assert "'third-party/fmt/include'" in setup and "DG_FORCE_BUILD" in setup
    init = _member(_archive("DeepGEMM-d30fc36"), "deep_gemm/__init__.py")
    for name in ("fp8_gemm_nt", "fp8_mqa_logits"):
        assert re.search(rf"\b{name}\b", init), name
    layout = _member(_archive("DeepGEMM-d30fc36"), "deep_gemm/utils/layout.py")
    assert "get_mn_major_tma_aligned_tensor" in layout
    recipe = load_settings(DEFAULT_CONFIG).recipes["deepgemm"]
    for path in recipe.files:  # deep_gemm/include/<top>/... <- DeepGEMM's own tree or CUTLASS's include/
        inner = path.split("deep_gemm/include/", 1)[1]
        source = ("DeepGEMM-d30fc36", f"deep_gemm/include/{inner}") if inner.startswith("deep_gemm/") \
            else ("cutlass-deepgemm-f3fde58", f"include/{inner}")
        assert _member(_archive(source[0]), source[1]), path


# --- one of two builds of the same modules on the path ------------------------------------------

def fake_cache(tmp_path: Path, names: dict[str, list[str]]) -> Path:
    """Stamps of usable builds: name -> the names it conflicts with."""
    cache = tmp_path / "cache"
    for name, conflicts in names.items():
        site = cache / name / "site"
        (site / f"mod_{name}").mkdir(parents=True)
        write_stamp(cache / name, {"name": name, "status": "ok", "site": str(site), "conflicts": conflicts})
    return cache


def built(cache: Path) -> list[dict]:
    from repro.baselines.cache import _records

    return _records(cache)


def test_activate_puts_one_of_the_conflicting_builds_on_the_path(tmp_path, monkeypatch):
    cache = fake_cache(tmp_path, {"fa3": [], "fa3_bwd": ["fa3"], "fa2": [], "flash_mla": []})
    before = list(sys.path)
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # restored after the test
    monkeypatch.delenv(USE_ENV, raising=False)
    try:
        added = activate(cache)  # the config's `use`: fa3
        assert sorted(Path(a).parent.name for a in added) == ["fa2", "fa3", "flash_mla"]
        records = {r["name"]: r["active"] for r in built_baselines(cache)}
        assert records == {"fa2": True, "fa3": True, "fa3_bwd": False, "flash_mla": True}
        with pytest.raises(ImportError, match="fa3, which installs the same modules"):
            import_from("fa3_bwd", "mod_fa3_bwd", cache)
    finally:
        sys.path[:] = before
    monkeypatch.setenv(USE_ENV, "fa3_bwd")
    assert active_names(built(cache)) == {"fa2", "fa3_bwd", "flash_mla"}
    assert active_names(built(cache), use=["fa3"]) == {"fa2", "fa3", "flash_mla"}
    monkeypatch.setenv(USE_ENV, "fa3,fa3_bwd")
    with pytest.raises(ConfigError, match=USE_ENV):
        active_names(built(cache))
    monkeypatch.setenv(USE_ENV, "nope")
    with pytest.raises(ConfigError, match="unknown baseline 'nope'"):
        active_names(built(cache))


def test_a_lone_build_is_active_whatever_use_says(tmp_path, monkeypatch):
    monkeypatch.delenv(USE_ENV, raising=False)
    cache = fake_cache(tmp_path, {"fa3_bwd": ["fa3"], "fa2_bwd": ["fa2"]})
    assert active_names(built(cache)) == {"fa3_bwd", "fa2_bwd"}


def test_use_is_checked(tmp_path):
    base = {"repos": {"r": {"url": "file:///x", "commit": "0" * 40}},
            "recipes": {"a": {"kind": "tree", "repo": "r"}, "a_bwd": {"kind": "tree", "repo": "r", "conflicts": ["a"]},
                        "b": {"kind": "tree", "repo": "r"}},
            "cache_dir": str(tmp_path)}
    assert parse_settings({**base, "use": ["a_bwd"]}).recipes["a"].conflicts == ("a_bwd",)
    for use, message in ((["a", "a_bwd"], "a and a_bwd install the same modules"),
                         ([], "name one of a, a_bwd"), (["a", "zz"], "unknown baseline 'zz'")):
        with pytest.raises(ConfigError, match=message):
            parse_settings({**base, "use": use})
    bad = {**base, "recipes": {**base["recipes"], "b": {"kind": "tree", "repo": "r", "conflicts": ["c"]}}, "use": ["a"]}
    with pytest.raises(ConfigError, match="baselines.recipes.b.conflicts"):
        parse_settings(bad)


def test_plan_says_which_build_runs_use(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(USE_ENV, "fa3_bwd")
    assert main(["--dry-run", "only=[fa3,fa3_bwd]", f"cache_dir={tmp_path / 'c'}"]) == 0
    out = capsys.readouterr().out
    assert "conflicts fa3_bwd (same modules); where both are built, runs use fa3_bwd" in out
    assert "conflicts fa3 (same modules); where both are built, runs use fa3_bwd" in out


# --- a wheel's `files` are checked in the installed package --------------------------------------

def _git(repo: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main",
           "-c", "commit.gpgsign=false", "-C", str(repo), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout.strip()


def test_wheel_files_are_checked_after_install(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "tinyhdr" / "include").mkdir(parents=True)
    (pkg / "tinyhdr" / "__init__.py").write_text("")
    (pkg / "tinyhdr" / "include" / "kernel.cuh").write_text("// header\n")
    (pkg / "setup.py").write_text("from setuptools import setup\nsetup(name='tinyhdr', version='0.1', "
                                  "packages=['tinyhdr'], package_data={'tinyhdr': ['include/*.cuh']})\n")
    _git(pkg, "init", "-q")
    _git(pkg, "add", "-A")
    _git(pkg, "commit", "-q", "-m", "x")
    data = {"cache_dir": str(tmp_path / "cache"), "arch": "90", "jobs": "1",
            "repos": {"pkg": {"url": "file:///nowhere", "commit": _git(pkg, "rev-parse", "HEAD")}},
            "recipes": {"ok": {"kind": "wheel", "repo": "pkg", "imports": ["tinyhdr"],
                               "files": ["tinyhdr/include/kernel.cuh"]},
                        "bad": {"kind": "wheel", "repo": "pkg", "files": ["tinyhdr/include/missing.cuh"]}},
            "sources": {"pkg": str(pkg)}}
    records = {r["name"]: r for r in build_all(parse_settings(data), Progress(2, stream=io.StringIO()))}
    assert records["ok"]["outcome"] == "built", records["ok"].get("error")
    assert records["bad"]["outcome"] == "failed"
    assert records["bad"]["error"] == "the installed package lacks tinyhdr/include/missing.cuh"


# --- the backward experiment's FlashAttention probes ---------------------------------------------

def test_backward_probe_names_the_build_to_use(monkeypatch):
    from experiments import flash_attention_bwd as fab

    monkeypatch.setattr(fab, "needs_module", lambda *modules: (lambda: None))
    fake = type(sys)("fake_fa")
    fake.flash_attn_func = lambda q, k, v: q
    monkeypatch.setitem(sys.modules, "flash_attn_interface", fake)
    monkeypatch.setitem(sys.modules, "flash_attn", fake)

    def no_backward(fn):
        raise RuntimeError("This flash attention build does not support backward.\nException raised from ...")

    fab._backward_missing.cache_clear()
    monkeypatch.setattr(fab, "_tiny_backward", no_backward)
    reason = fab.EXPERIMENT.backend("fa3").probe()
    assert reason.startswith("flash_attn_interface was built without its backward kernels")
    assert "REPRO_BASELINES_USE=fa3_bwd" in reason and "\n" not in reason
    assert "fa2_bwd" in fab.EXPERIMENT.backend("fa2").probe()

    fab._backward_missing.cache_clear()
    monkeypatch.setattr(fab, "_tiny_backward", lambda fn: None)
    assert fab.EXPERIMENT.backend("fa3").probe() is None

    def other_failure(fn):
        raise RuntimeError("CUDA error: out of memory")

    fab._backward_missing.cache_clear()
    monkeypatch.setattr(fab, "_tiny_backward", other_failure)
    assert fab.EXPERIMENT.backend("fa2").probe() is None  # the case rows carry that error
    fab._backward_missing.cache_clear()
