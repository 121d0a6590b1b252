"""configs/quick.yaml as typed entries: which kernel, which cases, against which baselines."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from repro.measure.experiment import CONFIG_DIR, load_experiment
from repro.results.store import case_key

QUICK_CONFIG = CONFIG_DIR / "quick.yaml"
KERNEL = "kernel"  # the case parameter that keeps kernels apart in one quick.csv
OFF_GRID = "off_grid"  # a marker in the yaml, not a case parameter


class QuickConfigError(ValueError):
    """configs/quick.yaml (or a --only selection) that cannot be run."""


@dataclass(frozen=True)
class QuickCase:
    kernel: str
    case: dict  # the experiment's own case
    off_grid: bool

    @property
    def key(self) -> str:
        """The case string stored in quick.csv: the experiment's case plus `kernel=`."""
        return case_key({KERNEL: self.kernel, **self.case})


@dataclass(frozen=True)
class QuickEntry:
    """One kernel of the scoreboard: ours, its baselines in order of preference, the published kernel."""

    kernel: str
    experiment: str
    ours: str
    baselines: tuple[str, ...]
    upstream: str | None
    cases: tuple[QuickCase, ...]

    @property
    def backends(self) -> list[str]:
        return [self.ours, *self.baselines, *([self.upstream] if self.upstream else [])]


def _entry(kernel: str, spec: dict) -> QuickEntry:
    for key in ("experiment", "baselines", "cases"):
        if key not in spec:
            raise QuickConfigError(f"quick.yaml: kernel {kernel!r} has no {key!r}")
    unknown = set(spec) - {"experiment", "ours", "baselines", "upstream", "cases"}
    if unknown:
        raise QuickConfigError(f"quick.yaml: kernel {kernel!r}: unknown keys {sorted(unknown)}")
    try:
        exp = load_experiment(str(spec["experiment"]))
    except ValueError as exc:
        raise QuickConfigError(f"quick.yaml: kernel {kernel!r}: {exc}") from None
    entry = QuickEntry(kernel, exp.name, str(spec.get("ours", "tilelang")), tuple(spec["baselines"]),
                       spec.get("upstream"), ())
    for name in entry.backends:
        if name not in exp.backend_names:
            raise QuickConfigError(f"quick.yaml: kernel {kernel!r}: {exp.name} has no backend {name!r} "
                                   f"(it has {', '.join(exp.backend_names)})")
    cases = []
    for raw in spec["cases"]:
        case = {k: v for k, v in dict(raw).items() if k != OFF_GRID}
        if exp.validate_case is not None:
            try:
                exp.validate_case(case)
            except (ValueError, KeyError) as exc:
                raise QuickConfigError(f"quick.yaml: kernel {kernel!r}, case {case_key(case)}: {exc}") from None
        cases.append(QuickCase(kernel, case, bool(dict(raw).get(OFF_GRID, False))))
    if not cases:
        raise QuickConfigError(f"quick.yaml: kernel {kernel!r} lists no case")
    return QuickEntry(entry.kernel, entry.experiment, entry.ours, entry.baselines, entry.upstream, tuple(cases))


def load_plan(path: Path = QUICK_CONFIG, selftest: bool = False, only: list[str] | None = None) -> list[QuickEntry]:
    """The scoreboard's entries (the self-test's with selftest=True), narrowed to `only` kernels."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    section = data.get("selftest" if selftest else "kernels") or {}
    entries = [_entry(kernel, spec) for kernel, spec in section.items()]
    if only:
        unknown = sorted(set(only) - {e.kernel for e in entries})
        if unknown:
            raise QuickConfigError(f"--only: unknown kernel(s) {', '.join(unknown)}; "
                                   f"known: {', '.join(e.kernel for e in entries)}")
        entries = [e for e in entries if e.kernel in only]
    return entries


def settings(path: Path = QUICK_CONFIG) -> dict:
    """The regression rule and the estimate's fallback, from the same file."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    return {"min_drop": float(data.get("regression", {}).get("min_drop", 0.05)),
            "seconds_per_case": float(data.get("seconds_per_case", 8))}
