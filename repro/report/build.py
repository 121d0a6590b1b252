"""Regenerate paper/ from results/: tables, figures, ledger, appendix, README and the LaTeX index files."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import yaml

from repro.report import claims as claims_mod
from repro.report import publish, style
from repro.report.coverage import all_coverage
from repro.report.environment import write_environment
from repro.report.figures import Figure, experiment_figures
from repro.report.ledger import write_ledger
from repro.report.load import Results, load, require_measured
from repro.report.publish import ReportError  # noqa: F401  (raised for a bad --out)
from repro.report.readme import write_readme
from repro.report.render import latex_escape, write
from repro.report.loc_figure import loc_figure
from repro.report.side import scaling_figure, write_side_tables
from repro.report.tables import write_experiment

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def read_config(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) if path.exists() else {}


def experiment_specs(results: Results, config: dict) -> dict[str, dict]:
    """Every experiment present in results, with its report settings (defaults when unlisted)."""
    listed = config.get("experiments") or {}
    default = {"baselines": config.get("default_baselines", []), "figures": None}
    order = list(listed)  # the config's order (the claims'), then any unlisted experiment by name
    names = sorted(results.experiments, key=lambda n: (order.index(n) if n in order else len(order), n))
    return {name: {**default, **listed.get(name, {})} for name in names}


def make_figures(results: Results, config: dict, out: Path, coverage: dict) -> list[Figure]:
    style.apply()
    figures: list[Figure] = []
    labels = config.get("backend_labels", {})
    for name, spec in experiment_specs(results, config).items():
        figures += experiment_figures(results, name, spec, out, labels, coverage)
    if "loc" in results.side:
        figures += [f for hw in results.hardware if (f := loc_figure(results, config, hw, out))]
    if (fig := scaling_figure(results, out)) is not None:
        figures.append(fig)
    return figures


def figures_index(figures: list[Figure], out: Path) -> Path:
    """figures/all.tex: one float per figure, PDF versions, in a stable order."""
    blocks = []
    for fig in sorted(figures, key=lambda f: f.stem.name):
        rel = fig.stem.relative_to(out.parent).as_posix()
        blocks.append("\\begin{figure}[htbp]\n\\centering\n"
                      f"\\includegraphics[width=\\linewidth,height=0.62\\textheight,keepaspectratio]{{{rel}.pdf}}\n"
                      f"\\caption{{{latex_escape(fig.caption)}}}\n\\label{{fig:{fig.stem.name}}}\n\\end{{figure}}\n")
    text = "\n".join(blocks) if blocks else "No figures yet: no measured results under \\texttt{results/}.\n"
    return write(out / "all.tex", text)


def tables_index(specs: dict, written: list[Path], out: Path) -> Path:
    lines = []
    for name, spec in specs.items():
        lines.append(f"\\subsection{{{latex_escape(spec.get('title', name))}}}\n\\input{{tables/{name}}}\n")
    for name, title in (("loc", "Code size"), ("portability", "Portability"), ("scaling", "Scaling")):
        if out / f"{name}.tex" in written:
            lines.append(f"\\subsection{{{title}}}\n\\input{{tables/{name}}}\n")
    return write(out / "all.tex", "\n".join(lines) or "No measured results under \\texttt{results/} yet.\n")


def clear_generated(out: Path, figures_only: bool) -> None:
    """Remove earlier generated tables/figures so that outputs for vanished results do not linger."""
    folders = {"figures": ("*.png", "*.pdf", "*.tex")}
    if not figures_only:
        folders["tables"] = ("*.md", "*.tex")
    for folder, patterns in folders.items():
        for pattern in patterns:
            for path in sorted((out / folder).glob(pattern)):
                path.unlink()


def generate(results_dir: Path, out: Path, figures_only: bool = False, config_dir: Path = CONFIG_DIR,
             note: Callable[[str], None] | None = None) -> list[Path]:
    """Write everything under `out`; returns the written files (sorted).

    `out` is checked first (ReportError: a bad request, nothing done). What a killed earlier run
    left is then put right (repro/report/publish.py), and results are read and checked (StoreError
    for damaged or unmeasured results). The report is built in a sibling folder holding a copy of
    `out`, which takes the place of `out` in one step once everything is written: a failure or a
    kill at any point leaves `out` whole, as it was or as the new report. `note` receives remarks
    (results left out, leftovers put right), one line each.
    """
    out = publish.check_out(Path(out), Path(results_dir))
    say = note or (lambda text: None)
    with publish.locked(out.parent):
        for line in publish.recover_or_refuse(out):
            say(line)
        stage = publish.make_stage(out)
        try:
            results = load(results_dir)
            require_measured(results)
            for line in results.notes:
                say(line)
            publish.step("loaded")
            publish.fill_stage(stage, out)
            written = _generate(results, stage, figures_only, config_dir)
            publish.step("built")
            publish.publish(stage, out)
        except publish.LateInterrupt:
            raise  # the new report is in place
        except BaseException:
            publish.remove(stage)
            raise
    return sorted(out / p.relative_to(stage) for p in written)


def _generate(results: Results, out: Path, figures_only: bool, config_dir: Path) -> list[Path]:
    clear_generated(out, figures_only)
    config = read_config(config_dir / "report.yaml")
    specs = experiment_specs(results, config)
    coverage = {key: (cov, specs[key[0]]) for key, cov in all_coverage(results, config_dir).items()}
    figures = make_figures(results, config, out / "figures", coverage)
    written = [p for f in figures for p in (f.stem.with_suffix(".png"), f.stem.with_suffix(".pdf"))]
    written.append(figures_index(figures, out / "figures"))
    if figures_only:
        return sorted(written)
    tables: list[Path] = []
    for name, spec in specs.items():
        spec = {"best_of": config.get("best_of", []), **spec}  # an experiment may name its own
        tables += write_experiment(results, name, spec, config.get("subject", "tilelang"), out / "tables", coverage,
                                   config.get("backend_notes", {}))
    tables += write_side_tables(results, config, out / "tables")
    written += tables + [tables_index(specs, tables, out / "tables")]
    figure_map: dict = {}
    for fig in figures:
        figure_map.setdefault((fig.key, fig.hardware), []).append(fig.stem)
    ledger = claims_mod.evaluate(read_config(config_dir / "claims.yaml"), results, figure_map, coverage)
    written += write_ledger(ledger, results.root.parent, out)
    written += write_environment(results, out)
    written.append(write_readme(results, ledger, figures, specs, coverage, out))
    return sorted(written)
