"""Every override is checked before any GPU work; errors name the key and the allowed values."""
from __future__ import annotations

import os
import re
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from repro.measure.experiment import Experiment, known_experiments
from repro.measure.hardware import profile_names


class ConfigError(ValueError):
    """A bad override or config value, reported before anything runs."""


def _positive_int(key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}={value!r}: must be a positive integer")
    return value


def check_bench(bench: DictConfig) -> None:
    for key in ("warmup_ms", "rep_ms"):
        v = bench.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (key == "rep_ms" and v == 0):
            raise ConfigError(f"bench.{key}={v!r}: must be a number > 0")
    for key in ("min_reps", "max_reps", "correctness_trials"):
        _positive_int(f"bench.{key}", bench.get(key))
    if bench.max_reps < bench.min_reps:
        raise ConfigError(f"bench.max_reps={bench.max_reps} is below bench.min_reps={bench.min_reps}")
    for key in ("flush_l2", "cuda_graph"):
        if not isinstance(bench.get(key), bool):
            raise ConfigError(f"bench.{key}={bench.get(key)!r}: must be true or false")
    if bench.get("isolate") not in (True, False, "auto"):
        raise ConfigError(f"bench.isolate={bench.get('isolate')!r}: allowed values: true, false, auto")
    if bench.timer not in ("cuda_events",):
        raise ConfigError(f"bench.timer={bench.timer!r}: allowed values: cuda_events")
    timeout = bench.get("timeout_s")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError(f"bench.timeout_s={timeout!r}: must be a number of seconds > 0")
    for dtype, tol in bench.tolerance.items():
        for k in ("rel_l2", "max_abs_rel"):
            if not isinstance(tol.get(k), (int, float)) or tol.get(k) <= 0:
                raise ConfigError(f"bench.tolerance.{dtype}.{k}={tol.get(k)!r}: must be a number > 0")


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
    return list(backends)


def check_dtypes(cfg: DictConfig) -> None:
    allowed = list(cfg.get("dtypes_supported") or [])
    chosen = [cfg.dtype] if cfg.get("dtype") is not None else list(cfg.get("dtypes") or [])
    bad = [d for d in chosen if d not in allowed]
    if bad:
        key = "dtype" if cfg.get("dtype") is not None else "dtypes"
        raise ConfigError(f"{key}: unsupported dtype {bad[0]!r} for this experiment; allowed: {', '.join(allowed)}")


def validate(cfg: DictConfig, exp: Experiment) -> tuple[list[str], list[dict]]:
    """Check the whole config; return (backends, cases). Raises ConfigError."""
    check_run_keys(cfg)
    check_bench(cfg.bench)
    hw = cfg.hardware.name
    if hw not in ["auto", *profile_names()]:
        raise ConfigError(f"hardware={hw!r}: allowed values: auto, {', '.join(profile_names())}")
    backends = check_names(cfg, exp)
    check_dtypes(cfg)
    try:
        cases = exp.cases(cfg)
        for case in cases:
            if exp.validate_case:
                exp.validate_case(case)
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"experiment {exp.name}: {exc}") from exc
    if not cases:
        raise ConfigError(f"experiment {exp.name}: the overrides select no case")
    return backends, cases


def check_experiment_name(name) -> None:
    if name not in known_experiments():
        raise ConfigError(f"experiment={name!r}: unknown; allowed: {', '.join(known_experiments())}")


def settings_of(cfg: DictConfig) -> dict:
    """The plain dict a measurement needs (also what a child process receives)."""
    bench = OmegaConf.to_container(cfg.bench, resolve=True)
    tol = dict(bench.pop("tolerance"))
    extra = cfg.get("tolerance")
    for dtype, override in (OmegaConf.to_container(extra, resolve=True) if extra else {}).items():
        tol[dtype] = {**tol.get(dtype, {}), **override}
    return {**bench, "tolerance": tol}


RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CPU_EXPERIMENTS = ("selftest",)  # the only experiment allowed to measure on the CPU


def _flag(cfg: DictConfig, key: str) -> None:
    if not isinstance(cfg.get(key, False), bool):
        raise ConfigError(f"{key}={cfg.get(key)!r}: must be true or false")


def check_run_keys(cfg: DictConfig) -> None:
    """The top-level keys of a run: flags, run id, device, shard and where results go."""
    from repro.run.shard import parse_shard

    for key in ("redo", "dry_run"):
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
        parse_shard(cfg.get("shard"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    check_results_dir(cfg.get("results_dir"))


def check_results_dir(value) -> None:
    """A folder we can create and write in: checked now, not after the first measurement."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"results_dir={value!r}: give a folder path, e.g. results_dir=results")
    path = Path(value)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe == path and not path.is_dir():
        raise ConfigError(f"results_dir={value!r}: exists and is not a folder")
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"results_dir={value!r}: cannot create or write in {probe.as_posix()!r}")


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
