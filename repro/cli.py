"""The command line: checks the overrides before Hydra runs anything, turns a composed config into
a run, and every expected failure into one `error:` line with a documented exit code.

    0    done (a dry run: validated and listed); also a run stopped by its `time_budget_s`: the
         cases it finished are stored, its last line says what is left, the same command resumes
    1    anything else: a job that crashed, a file-system error about a path the user did not choose
    2    a bad override or config value (Hydra-level ones too: an unknown experiment, a misspelt
         key, an unknown config group option, a `+key=` the config does not have), a results_dir
         that cannot be a folder, a `-m` sweep with no job or with any job that would be refused
    3    no usable device
    4    a damaged results file or run manifest
    130  interrupted (Ctrl-C): the rows stored so far are kept; the same command resumes
Every job of a `-m` sweep is validated before the first one runs (a dry run's jobs each validate
themselves); a sweep whose jobs then fail exits with the code of its first failed job (1 when a
job crashed outright).
"""
from __future__ import annotations

import difflib
import errno
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from repro.measure.hardware import HardwareError
from repro.results.store import StoreError
from repro.run.validate import ConfigError, check_task

EXIT_CONFIG, EXIT_NO_DEVICE, EXIT_STORE, EXIT_INTERRUPTED = 2, 3, 4, 130
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
MAX_LINE = 2000  # characters of one error line: what it says first is what matters
INTERRUPTED = "interrupted; rows already stored are kept: run the same command again to resume"
# OSErrors that name a path the user chose (results_dir=...) rather than a fault of the harness.
CONFIG_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ELOOP, errno.ENAMETOOLONG, errno.EEXIST, errno.ENOTDIR)


def error(message: str, code: int) -> int:
    """Print one `error:` line (a multi-line message is folded into it, a long one cut) and return
    the exit code."""
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    text = "; ".join(lines)
    if len(text) > MAX_LINE:
        text = f"{text[:MAX_LINE]}... (cut, {len(text)} characters)"
    print(f"error: {text}", file=sys.stderr)
    return code


def dispatch(cfg: DictConfig) -> int:
    """Run the configured task; print `error: ...` and return an exit code instead of a traceback."""
    from omegaconf.errors import OmegaConfBaseException

    task = cfg.get("task", "measure")
    try:
        check_task(cfg)
        if task == "measure":
            from repro.run.runner import run

            return run(cfg)
        if task == "loc":
            from repro.loc import run as run_loc

            run_loc(cfg)
            return 0
        from repro.portability import run as run_portability

        run_portability(cfg)
        return 0
    except ConfigError as exc:
        return error(exc, EXIT_CONFIG)
    except HardwareError as exc:
        return error(exc, EXIT_NO_DEVICE)
    except StoreError as exc:
        return error(exc, EXIT_STORE)
    except OmegaConfBaseException as exc:  # a config key the code needs and the config lacks
        key = getattr(exc, "full_key", None)
        return error(f"{key}: {exc.msg}" if key else exc, EXIT_CONFIG)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        # A folder the user chose that cannot be written is a configuration matter (results_dir=...).
        code = EXIT_CONFIG if exc.errno in CONFIG_ERRNOS else 1
        return error(f"{where}{exc.strerror or exc}", code)
    except KeyboardInterrupt as exc:  # the runner's Interrupted says what was kept; elsewhere, this
        return error(str(exc) or INTERRUPTED, EXIT_INTERRUPTED)


# --- before Hydra: every job's overrides compose, and name only keys the config has ---------------

def check_command_line(argv: list[str]) -> Optional[str]:
    """The reason the command line cannot run (one line), or None. Composes each job's config with
    Hydra's compose API, as `hydra.main` will, so mistakes end here with exit code 2 and no job starts."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    args = get_args_parser().parse_args(argv)  # a malformed flag: argparse's usage line, exit 2
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        return None  # Hydra's own reports, not runs
    if args.config_path or args.config_dir:
        return None  # another config tree: Hydra checks it
    config_name = args.config_name or "config"
    overrides = list(args.overrides)
    try:
        parsed = OverridesParser.create(config_loader=_config_loader()).parse_overrides(overrides)
        multirun = args.multirun or any(o.key_or_group == "hydra.mode" and o.value() == "MULTIRUN" for o in parsed)
        if any(o.key_or_group == "hydra/sweeper" for o in parsed):
            return None  # a sweeper plugin expands the sweep its own way
        if multirun:
            from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

            jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
            if not jobs:
                return _empty_sweep(parsed)
        else:
            jobs = [overrides]
        seen: set[tuple] = set()
        for num, job in enumerate(jobs):
            if tuple(job) not in seen:
                seen.add(tuple(job))
                cfg = _check_job(config_name, job)
                if multirun:  # every job before the first runs: no sweep stops halfway on a bad value
                    _check_sweep_job(cfg, num, job)
    except ConfigError as exc:
        return str(exc)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        return _hydra_message(exc)
    except OSError as exc:  # e.g. an override key longer than a file name, looked up as a config group
        return f"{_short(exc.filename) + ': ' if exc.filename else ''}{exc.strerror or exc}"
    return None


def _config_loader():
    """Hydra's loader over configs/, so that glob() sweeps expand here as they will in the run."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path

    return ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONFIG_DIR)))


def _empty_sweep(parsed) -> str:
    """-m with no job: name the override whose sweep is empty (range(5,5), a glob matching nothing)."""
    empty = [o.input_line for o in parsed if o.is_sweep_override() and not list(o.sweep_string_iterator())]
    which = f"{empty[0]} gives no value" if empty else "the overrides give no job"
    return f"-m: the sweep has no job to run ({which}); nothing was run"


def _check_sweep_job(cfg: DictConfig, num: int, job: list[str]) -> None:
    """What a job of a sweep checks before measuring, checked for all of them now (a dry run's jobs
    only list cases: each checks itself when it runs, and every bad one is reported)."""
    from repro.run.plan import plan

    try:
        check_task(cfg)
        if cfg.get("task", "measure") == "measure" and cfg.get("dry_run") is not True:
            plan(cfg)
    except ConfigError as exc:
        raise ConfigError(f"job #{num} of the sweep ({' '.join(job)}): {exc}; no job was run") from None


def _is_group(override) -> bool:
    key = override.key_or_group
    return override.package is not None or (not key.startswith("hydra.") and "." not in key
                                            and (key.startswith("hydra/") or _is_folder(CONFIG_DIR / key)))


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name longer than the file system takes: no config group
        return False


def _short(text, width: int = 80) -> str:
    text = str(text)
    return text if len(text) <= width else f"{text[:width]}... ({len(text)} characters)"


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def _check_job(config_name: str, job: list[str]) -> DictConfig:
    """One job's overrides: group options exist, every other key exists in the composed config;
    returns the job's composed config."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import MissingConfigException

    parsed = OverridesParser.create().parse_overrides(job)
    groups = [o for o in parsed if _is_group(o)]
    try:
        base = _compose(config_name, [o.input_line for o in groups])
    except MissingConfigException as exc:
        raise ConfigError(_missing_option(exc, groups)) from None
    for o in parsed:
        if o in groups or o.is_hydra_override() or o.is_delete():
            continue
        key = o.key_or_group
        if OmegaConf.select(base, key, default=_ABSENT) is _ABSENT:
            raise ConfigError(_unknown_key(o, base))
    return _compose(config_name, job)  # anything else Hydra objects to (types, ambiguous sweeps...)


_ABSENT = object()


def _unknown_key(override, base: DictConfig) -> str:
    key = override.key_or_group
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(base, parent_key) if parent_key else base
    known = [str(k) for k in parent.keys()] if isinstance(parent, DictConfig) else []
    close = difflib.get_close_matches(leaf, known, n=1)
    hint = f"did you mean {'.'.join(filter(None, [parent_key, close[0]]))!r}? " if close else ""
    where = f"{parent_key}." if parent_key else ""
    added = " (a `+` override may only set a key the config already has)" if override.is_add() or \
        override.is_force_add() else ""
    return (f"{_short(override.input_line)}: unknown key {_short(key)!r}{added}; {hint}"
            f"known: {', '.join(where + k for k in known)}")


def _missing_option(exc, groups) -> str:
    """`experiment=nope` -> the option, its group and the allowed options."""
    missing = str(getattr(exc, "missing_cfg_file", "") or "")
    group, _, option = missing.rpartition("/")
    line = next((o.input_line for o in groups if o.key_or_group == group), f"{group}={option}")
    options = list(getattr(exc, "options", None) or [])
    if not options and (CONFIG_DIR / group).is_dir():
        options = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
    if not group:
        return _hydra_message(exc)
    return f"{line}: no {group} named {option!r}; allowed: {', '.join(options)}"


def _hydra_message(exc: BaseException) -> str:
    text = str(exc)
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += "\n" + str(cause)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(
        ("full_key:", "object_type=", "reference_type="))]
    return "; ".join(lines)


# --- after a -m sweep: the exit code of its jobs ----------------------------------------------------

try:
    from hydra.experimental.callback import Callback
except ImportError:  # Hydra is a dependency of the command line only
    Callback = object  # type: ignore[misc,assignment]

FAILED_FOLDER = ".failed"  # under the sweep folder: one JSON file per job that did not end with 0
FAILED_JOBS: list[dict] = []  # filled in the sweeping process when the sweep ends


class SweepExitStatus(Callback):
    """Hydra callback (configs/config.yaml): each job of a multirun that returns a non-zero code or
    raises leaves a note in <sweep dir>/.failed/, wherever the launcher ran it (in this process,
    a joblib worker or a SLURM job); when the sweep ends, the sweeping process collects them."""

    @staticmethod
    def _folder(config) -> Path:
        return Path(str(config.hydra.sweep.dir)) / FAILED_FOLDER

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        FAILED_JOBS.clear()
        shutil.rmtree(self._folder(config), ignore_errors=True)  # a reused sweep folder's old notes

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN:
            return
        if job_return.status == JobStatus.COMPLETED:
            value = job_return.return_value
            code = value if isinstance(value, int) and not isinstance(value, bool) else 0
            why = f"exit code {code}"
        else:
            code, why = 1, f"{type(job_return._return_value).__name__}: {job_return._return_value}"
        if code:
            folder = self._folder(config)
            folder.mkdir(parents=True, exist_ok=True)
            note = {"num": int(config.hydra.job.num), "code": code, "why": why,
                    "overrides": list(config.hydra.overrides.task)}
            (folder / f"{note['num']}.json").write_text(json.dumps(note))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = self._folder(config)
        notes = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                notes.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                notes.append({"num": path.stem, "code": 1, "why": "unreadable note", "overrides": []})
        FAILED_JOBS[:] = sorted(notes, key=lambda n: str(n["num"]).zfill(9))


def sweep_exit_code() -> int:
    """After a sweep: 0, or the first failed job's code with one line naming every failed job."""
    if not FAILED_JOBS:
        return 0
    jobs = ", ".join(f"#{n['num']} ({' '.join(n['overrides'])}: {n['why']})" for n in FAILED_JOBS)
    return error(f"{len(FAILED_JOBS)} job(s) of the sweep failed: {jobs}", int(FAILED_JOBS[0]["code"]) or 1)
