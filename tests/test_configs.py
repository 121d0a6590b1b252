"""Every experiment config composes, validates and lists its cases without a device; every key of
the configs is read by the code, and the bench settings live in the yaml alone."""
from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from repro.measure.experiment import known_experiments, load_experiment
from repro.measure.settings import BenchSettings, TimerSettings
from repro.run.plan import plan
from repro.run.validate import HARNESS_KEYS, measured_experiments, settings_of
from tests.helpers import compose_config

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
MEASURED = [n for n in known_experiments() if n not in ("loc", "portability")]


@pytest.mark.parametrize("name", known_experiments())
def test_config_composes(name):
    cfg = compose_config(f"experiment={name}", "results_dir=/nonexistent")
    assert cfg.experiment == name
    assert isinstance(settings_of(cfg), BenchSettings)


@pytest.mark.parametrize("name", MEASURED)
def test_experiment_plans(name):
    cfg = compose_config(f"experiment={name}")
    exp, backends, cases = plan(cfg)
    assert exp.name == name and cases and backends
    assert exp.baseline in exp.backend_names
    for case in cases:
        assert exp.flops(case) >= 0 and exp.bytes(case) > 0  # membw moves bytes only


def test_measured_experiments_are_the_modules():
    assert MEASURED == measured_experiments()


@pytest.mark.parametrize("profile", ["h100", "h200", "mi300x", "ascend910b"])
def test_hardware_profiles_compose(profile):
    cfg = compose_config(f"hardware={profile}")
    assert cfg.hardware.name == profile
    assert cfg.hardware.peak_tflops.fp16 > 0 and cfg.hardware.hbm_tbps > 0


def test_overrides_narrow_the_sweep():
    cfg = compose_config("experiment=gemm", "backends=[tilelang]", "dtype=bf16", "shapes=[[1000,2000,300]]")
    exp, backends, cases = plan(cfg)
    assert backends == ["tilelang"]
    assert cases == [{"M": 1000, "N": 2000, "K": 300, "dtype": "bf16"}]


# --- the bench settings: one typed, frozen object, its values only in configs/bench/ (issue 13) -------

def test_every_bench_key_is_a_setting_and_every_setting_a_bench_key():
    keys = set(OmegaConf.load(CONFIGS / "bench" / "default.yaml"))
    assert keys == {f.name for f in dataclasses.fields(BenchSettings)}
    quick = set(OmegaConf.load(CONFIGS / "bench" / "quick.yaml")) - {"defaults"}
    assert quick <= keys


def test_settings_hold_no_defaults_of_their_own():
    from repro.measure.cpu_timer import time_cpu
    from repro.measure.timer import time_cuda

    for cls in (BenchSettings, TimerSettings):
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, f.name
    for timer in (time_cuda, time_cpu):
        defaults = {n: p.default for n, p in inspect.signature(timer).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        assert defaults == {"flusher": None}, timer.__name__


def test_settings_are_read_once_typed_and_frozen():
    settings = settings_of(compose_config("bench=quick"))
    yaml = OmegaConf.merge(OmegaConf.load(CONFIGS / "bench" / "default.yaml"), OmegaConf.load(CONFIGS / "bench" / "quick.yaml"))
    assert settings.rep_ms == yaml.rep_ms and settings.warmup_ms == yaml.warmup_ms
    assert settings.timer == TimerSettings(yaml.warmup_ms, yaml.rep_ms, yaml.min_reps, yaml.max_reps, yaml.flush_l2,
                                           yaml.cuda_graph)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.rep_ms = 1  # type: ignore[misc]
    assert settings.tolerance_for("fp16") == dict(yaml.tolerance.fp16)


def test_settings_travel_to_a_child_as_json():
    import json

    settings = settings_of(compose_config("experiment=dsa_indexer", "bench.seed=7"))
    text = settings.to_json()
    assert json.loads(text)["tolerance"]["fp8"]["rel_l2"] == 1.0e-3  # plain data
    assert BenchSettings.from_json(text) == settings


def test_unknown_or_missing_settings_are_refused():
    from repro.measure.settings import SettingsError

    data = OmegaConf.to_container(compose_config().bench)
    with pytest.raises(SettingsError, match="bench.timer"):
        BenchSettings.from_dict({**data, "timer": "cuda_events"})
    with pytest.raises(SettingsError, match="bench.rep_ms"):
        BenchSettings.from_dict({k: v for k, v in data.items() if k != "rep_ms"})


# --- no dead configuration (issue 13) ----------------------------------------------------------------

def _sources(folders) -> str:
    return "\n".join(p.read_text() for folder in folders for p in sorted((ROOT / folder).rglob("*.py")))


def _read_in(key: str, text: str) -> bool:
    """The key is read: as an attribute, a subscript, a .get() or a string named in code."""
    return re.search(rf"""(\.{re.escape(key)}\b)|(["']{re.escape(key)}["'])""", text) is not None


def test_every_top_level_key_and_hardware_key_is_read():
    harness = _sources(["repro"])
    top = [k for k in OmegaConf.load(CONFIGS / "config.yaml") if k not in ("defaults", "hydra")]
    hardware = {k for p in (CONFIGS / "hardware").glob("*.yaml") for k in OmegaConf.load(p)}
    unread = [k for k in [*top, *sorted(hardware)] if not _read_in(k, harness)]
    assert not unread, f"config keys no code reads: {unread}"
    assert "tilelang_target" not in hardware  # kernels compile for the device present (kernels/_compile.py)


@pytest.mark.parametrize("name", MEASURED)
def test_every_experiment_key_is_read_by_its_code(name):
    from repro.run.runner import source_files

    code = "\n".join(p.read_text() for p in source_files(load_experiment(name)))
    keys = [k for k in OmegaConf.load(CONFIGS / "experiment" / f"{name}.yaml") if k not in HARNESS_KEYS]
    unread = [k for k in keys if not _read_in(k, code)]
    assert not unread, f"configs/experiment/{name}.yaml keys experiments/{name}.py never reads: {unread}"


def test_no_environment_switches_in_experiments():
    """Switches are config keys (validated, recorded with the run), not environment variables."""
    text = _sources(["experiments"])
    assert not re.search(r"environ(\.get)?\s*[\[(]\s*[\"']REPRO_", text)


def test_search_false_skips_the_schedule_search(tmp_path):
    from repro.results.store import ResultsStore
    from repro.run.runner import CPU_PROFILE, execute

    searched = []
    exp = dataclasses.replace(load_experiment("selftest"), prepare=lambda cases, backends: searched.append(backends))
    settings = settings_of(compose_config("experiment=selftest", "bench.isolate=false")).replace(seed=1)
    meta = {"run_id": "r", "hardware": "cpu", "seed": 1, "code_hash": "c", "env_key": "e"}
    todo = [({"n": 16, "dtype": "fp32"}, "matmul")]
    for search in (False, True):
        store = ResultsStore(tmp_path / str(search), "cpu", "selftest")
        store.params = ["n", "dtype"]
        execute(exp, todo, ["matmul"], settings, CPU_PROFILE, store, meta, "cpu", search=search)
    assert searched == [["matmul"]]  # only the run with search=true
    assert compose_config().search is True
