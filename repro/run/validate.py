"""Every override is checked before any GPU work; errors name the key and the allowed values."""
from __future__ import annotations

import errno
import functools
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from repro.measure.experiment import CONFIG_DIR, Experiment, known_experiments
from repro.measure.hardware import profile_names
from repro.measure.settings import BenchSettings, SettingsError


class ConfigError(ValueError):
    """A bad override or config value, reported before anything runs."""


def check_names(cfg: DictConfig, exp: Experiment) -> list[str]:
    """The selected backends, each one the experiment registers."""
    backends = cfg.get("backends")
    if backends is None:
        return exp.backend_names
    if isinstance(backends, str):
        backends = [backends]
    if not isinstance(backends, (list, ListConfig)) or not backends:
        raise ConfigError(f"backends={backends!r}: give a list, e.g. backends=[{exp.backend_names[0]}]")
    unknown = [b for b in backends if b not in exp.backend_names]
    if unknown:
        raise ConfigError(f"backends: unknown backend(s) {unknown} for experiment {exp.name}; "
                          f"allowed: {', '.join(exp.backend_names)}")
    _no_repeats("backends", list(backends))
    return list(backends)


def _no_repeats(key: str, values: list) -> None:
    twice = [v for i, v in enumerate(values) if v in values[:i]]
    if twice:
        raise ConfigError(f"{key}: {twice[0]!r} is listed twice")


def check_dtypes(cfg: DictConfig) -> None:
    allowed = list(cfg.get("dtypes_supported") or [])
    chosen = [cfg.dtype] if cfg.get("dtype") is not None else list(cfg.get("dtypes") or [])
    if cfg.get("dtype") is None:
        _no_repeats("dtypes", chosen)
    bad = [d for d in chosen if d not in allowed]
    if bad:
        key = "dtype" if cfg.get("dtype") is not None else "dtypes"
        raise ConfigError(f"{key}: unsupported dtype {bad[0]!r} for this experiment; allowed: {', '.join(allowed)}")


def validate(cfg: DictConfig, exp: Experiment) -> tuple[list[str], list[dict]]:
    """Check the whole config; return (backends, cases). Raises ConfigError."""
    check_run_keys(cfg)
    settings_of(cfg)
    hw = cfg.hardware.name
    if hw not in ["auto", *profile_names()]:
        raise ConfigError(f"hardware={hw!r}: allowed values: auto, {', '.join(profile_names())}")
    backends = check_names(cfg, exp)
    check_dtypes(cfg)
    check_experiment_keys(cfg, exp.name)
    try:
        cases = exp.cases(cfg)
        for case in cases:
            if exp.validate_case:
                exp.validate_case(case)
    except ConfigError:
        raise
    except OmegaConfBaseException as exc:  # a key an entry needs and lacks, e.g. extra_cases=[{batch: 1}]
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"experiment {exp.name}: {key + ': ' if key else ''}{exc.msg}") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"experiment {exp.name}: {exc}") from exc
    if not cases:
        raise ConfigError(f"experiment {exp.name}: the overrides select no case")
    return backends, cases


# Keys of an experiment's config that the harness checks itself (names, dtypes, settings).
HARNESS_KEYS = ("defaults", "experiment", "task", "backends", "dtypes", "dtypes_supported", "dtype", "bench",
                "tolerance", "device")


def check_experiment_keys(cfg: DictConfig, name: str) -> None:
    """Each key of the experiment's own config keeps the kind of value its yaml gives it: a list stays
    a list of the same kind of entries (each listed once), a positive number stays positive, a
    flag stays true or false, a mapping has no keys the yaml lacks. The experiment's cases() then
    checks what only it knows (e.g. that a sequence length divides the token count)."""
    path = CONFIG_DIR / "experiment" / f"{name}.yaml"
    if not path.is_file():
        return
    defaults = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    for key, default in defaults.items():
        if key in HARNESS_KEYS or key not in cfg:
            continue
        value = cfg.get(key)
        value = OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
        _like(key, value, default)


def _like(key: str, value, default, axis: bool = True) -> None:
    """Refuse `value` unless it has the kind of `default` (the yaml's value for `key`). A list under
    a key (`axis`) lists values to sweep, each once; a list inside a list is a tuple, e.g. [M, N, K]."""
    if default is None:
        return
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: must be true or false")
    elif isinstance(default, (int, float)):
        integral = isinstance(default, int)
        if isinstance(value, bool) or not isinstance(value, (int, float) if not integral else int) \
                or not math.isfinite(value):
            raise ConfigError(f"{key}={value!r}: must be {'an integer' if integral else 'a finite number'}"
                              f"{' > 0' if default > 0 else ' >= 0' if default == 0 else ''}")
        if (default > 0 and value <= 0) or (default == 0 and value < 0):
            raise ConfigError(f"{key}={value!r}: must be {'> 0' if default > 0 else '>= 0'}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r}: must be a name like {default!r}")
    elif isinstance(default, list):
        if value is None:
            return  # no entries
        if not isinstance(value, list):
            example = json.dumps(default[:2]).replace('"', "").replace(" ", "")
            raise ConfigError(f"{key}={value!r}: give a list, e.g. {key}={example}")
        seen = []
        for i, entry in enumerate(value):
            if default:
                _like(f"{key}[{i}]", entry, default[0] if _same_kind(default) else default[min(i, len(default) - 1)],
                      axis=False)
            marker = json.dumps(entry, sort_keys=True, default=str)
            if axis and marker in seen:
                raise ConfigError(f"{key}: {entry!r} is listed twice")
            seen.append(marker)
    elif isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r}: give a mapping with keys {', '.join(map(str, default))}")
        unknown = [k for k in value if k not in default]
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}: unknown key; known: {', '.join(map(str, default))}")
        for k, v in value.items():
            _like(f"{key}.{k}", v, default[k])


def _same_kind(default: list) -> bool:
    return len({type(x) for x in default}) == 1


TASKS = ("measure", "loc", "portability")


def check_task(cfg: DictConfig) -> None:
    """`task` is set by the experiment's config: measuring `loc`, or counting lines of `gemm`, is refused."""
    task, name = cfg.get("task", "measure"), cfg.get("experiment")
    if task not in TASKS:
        raise ConfigError(f"task={task!r}: allowed values: {', '.join(TASKS)}")
    path = CONFIG_DIR / "experiment" / f"{name}.yaml"
    own = OmegaConf.load(path).get("task", "measure") if isinstance(name, str) and path.is_file() else "measure"
    if task != own:
        raise ConfigError(f"task={task}: experiment={name} runs as task={own} (configs/experiment/{name}.yaml); "
                          f"drop the task override" + (f", or pick a measured experiment ({', '.join(measured_experiments())})"
                                                        if task == "measure" else ""))


def measured_experiments() -> list[str]:
    return [n for n in known_experiments() if (CONFIG_DIR.parent / "experiments" / f"{n}.py").is_file()]


def check_experiment_name(name) -> None:
    if name not in known_experiments():
        raise ConfigError(f"experiment={name!r}: unknown; allowed: {', '.join(known_experiments())}")
    if name not in measured_experiments():
        raise ConfigError(f"experiment={name}: not a measurement (its config sets task); allowed: "
                          f"{', '.join(measured_experiments())}")


def settings_of(cfg: DictConfig) -> BenchSettings:
    """The run's bench settings, read once: `bench`, with the experiment's own `tolerance` entries
    laid over `bench.tolerance` (also what a child process receives). Raises ConfigError."""
    bench = OmegaConf.to_container(cfg.bench, resolve=True)
    extra = cfg.get("tolerance")
    if extra is not None:
        extra = OmegaConf.to_container(extra, resolve=True) if isinstance(extra, (DictConfig, ListConfig)) else extra
        if not isinstance(extra, dict):
            raise ConfigError(f"tolerance={extra!r}: one entry per dtype, e.g. tolerance.fp8.rel_l2=1e-3")
        tol = dict(bench.get("tolerance") or {})
        for dtype, override in extra.items():
            if not isinstance(override, dict):
                raise ConfigError(f"tolerance.{dtype}={override!r}: give {{rel_l2: ..., max_abs_rel: ...}}")
            tol[dtype] = {**(tol.get(dtype) or {}), **override}
        bench["tolerance"] = tol
    try:
        return BenchSettings.from_dict(bench)
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None


@functools.lru_cache(maxsize=None)
def default_settings(experiment: str) -> BenchSettings:
    """The bench settings an experiment runs with when nothing is overridden (configs/bench/default.yaml
    under the experiment's own config): the reference a stored row's gate is compared with."""
    from hydra import compose, initialize_config_dir

    check_experiment_name(experiment)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return settings_of(compose(config_name="config", overrides=[f"experiment={experiment}"]))


def default_gate(experiment: str, case: dict) -> str:
    """The `gate` a row of `experiment` for `case` (its parameters, e.g. parse_case(row["case"]))
    gets under the experiment's defaults. A stored row judged more leniently is named by
    `repro.results.store.looser_gate(row["gate"], default_gate(experiment, case))`."""
    from repro.measure.experiment import load_experiment
    from repro.results.store import gate_of
    from repro.run.runner import gate_dtype

    return gate_of(default_settings(experiment), gate_dtype(load_experiment(experiment), case))


RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CPU_EXPERIMENTS = ("selftest",)  # the only experiment allowed to measure on the CPU


def _flag(cfg: DictConfig, key: str) -> None:
    if not isinstance(cfg.get(key, False), bool):
        raise ConfigError(f"{key}={cfg.get(key)!r}: must be true or false")


def check_run_keys(cfg: DictConfig) -> None:
    """The top-level keys of a run: flags, run id, device, shard, time budget and where results go."""
    from repro.run.shard import parse_shard

    for key in ("redo", "dry_run", "search"):
        _flag(cfg, key)
    run_id = cfg.get("run_id")
    if run_id is not None and (isinstance(run_id, bool) or not RUN_ID.match(str(run_id))):
        raise ConfigError(f"run_id={run_id!r}: up to 64 letters, digits, '.', '_' or '-', starting with a letter "
                          "or digit (it names files)")
    device = cfg.get("device", "cuda")
    if device not in ("cuda", "cpu"):
        raise ConfigError(f"device={device!r}: allowed values: cuda (cpu only for experiment=selftest)")
    if device == "cpu" and cfg.get("experiment") not in CPU_EXPERIMENTS:
        raise ConfigError(f"device=cpu: only the harness self-test ({', '.join(CPU_EXPERIMENTS)}) runs on the CPU")
    try:
        shard = parse_shard(cfg.get("shard"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if shard is not None and shard[1] > MAX_SHARDS:
        raise ConfigError(f"shard={_short(cfg.get('shard'))}: at most {MAX_SHARDS} shares (one GPU each), "
                          "e.g. shard=0/8")
    check_time_budget(cfg.get("time_budget_s"))
    check_results_dir_of(cfg.get("results_dir_of"))
    check_results_dir(cfg.get("results_dir"))


def check_time_budget(value) -> None:
    """`time_budget_s`: null (no limit) or a finite number of seconds > 0 (repro/run/runner.py TimeBudget)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"time_budget_s={_short(value)}: a number of seconds > 0 (no new case starts once "
                          "they have passed; the same command resumes), or null for no limit, e.g. time_budget_s=600")


MAX_SHARDS = 4096


def check_results_dir_of(value) -> None:
    """`results_dir_of` (configs/config.yaml): experiment -> the folder its rows go to when
    results_dir is not given (the self-test's: outputs/selftest, never the record)."""
    value = OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value
    if value is None:
        return
    if not isinstance(value, dict):
        raise ConfigError(f"results_dir_of={_short(value)!r}: a mapping of experiment to folder, e.g. "
                          "results_dir_of.selftest=outputs/selftest")
    for name, folder in value.items():
        if name not in known_experiments():
            raise ConfigError(f"results_dir_of.{_short(name)}: unknown experiment; allowed: "
                              f"{', '.join(known_experiments())}")
        if not isinstance(folder, str) or not folder.strip():
            raise ConfigError(f"results_dir_of.{name}={folder!r}: give a folder path")


def _short(value, width: int = 60) -> str:
    text = str(value)
    return text if len(text) <= width else f"{text[:width]}... ({len(text)} characters)"


def _existing_part(path: Path) -> tuple[Path, Optional[str]]:
    """Walk `path` from its root: (the deepest folder that exists, why the rest cannot be made there
    or None). A dangling symbolic link, a loop of links, a name longer than the file system takes
    or a file where a folder should be are said here, not as an OSError after measuring."""
    parts = [*reversed(path.parents), path]
    found = parts[0]
    for part in parts:
        try:
            info = os.stat(part)
        except FileNotFoundError:
            if os.path.islink(part):
                return found, f"{part.as_posix()!r} is a symbolic link to {os.readlink(part)!r}, which does not exist"
            return found, None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return found, f"{part.as_posix()!r} is a loop of symbolic links"
            if exc.errno == errno.ENAMETOOLONG:
                return found, "a name in it is longer than the file system allows (255 bytes a name, 4096 a path)"
            if exc.errno == errno.ENOTDIR:
                return found, f"{found.as_posix()!r} exists and is not a folder"
            return found, f"{part.as_posix()!r}: {exc.strerror or exc}"
        if not stat.S_ISDIR(info.st_mode):
            return found, f"{part.as_posix()!r} exists and is not a folder"
        found = part
    return found, None


def check_results_dir(value, hardware: Optional[str] = None) -> None:
    """A folder we can create and write in: checked now, not after the first measurement; with
    `hardware`, its results/<hardware>/ subfolder (known once the device is detected)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"results_dir={value!r}: give a folder path, e.g. results_dir=results")
    path = Path(value) / hardware if hardware else Path(value)
    probe, problem = _existing_part(path.absolute())
    if problem:
        raise ConfigError(f"results_dir={_short(value)!r}: {problem}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"results_dir={_short(value)!r}: cannot create or write in {probe.as_posix()!r}")


def check_launcher(launcher, gpus: int) -> None:
    """The Hydra launcher's keys that decide how jobs share GPUs (a multirun job checks its own)."""
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        n_jobs = launcher.get("n_jobs")
        if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
            raise ConfigError(f"hydra.launcher.n_jobs={n_jobs!r}: a positive integer, one job per GPU "
                              f"(default: the GPU count, {gpus} here)")
        if gpus and n_jobs > gpus:
            raise ConfigError(f"hydra.launcher.n_jobs={n_jobs}: more parallel jobs than the {gpus} GPU(s) "
                              f"visible; allowed: 1..{gpus} (never two timing jobs on one GPU)")
    if "submitit" in target:
        timeout = launcher.get("timeout_min")
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
            raise ConfigError(f"hydra.launcher.timeout_min={timeout!r}: a positive number of minutes")
        for key in ("gpus_per_node", "gpus_per_task"):
            n = launcher.get(key)
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n not in (0, 1)):
                raise ConfigError(f"hydra.launcher.{key}={n!r}: each job times on one GPU; allowed: 0, 1 "
                                  "(spread a sweep over more GPUs with shard=i/n)")
