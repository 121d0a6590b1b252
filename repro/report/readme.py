"""paper/README.md: the GitHub summary (verdicts with key numbers, headline figures, what is missing)."""
from __future__ import annotations

import os
from pathlib import Path

from repro.report.claims import ClaimResult
from repro.report.verdicts import NOT_MEASURED
from repro.report.coverage import backend_gaps, missing_lines
from repro.report.environment import hardware_label
from repro.report.figures import Figure
from repro.report.load import Results
from repro.report.render import markdown_escape, markdown_table, write


def _key_numbers(claim: ClaimResult) -> str:
    """'part: verdict, brief' per part; context parts marked."""
    items = []
    for part in claim.parts:
        text = f"{part.name}: *{part.verdict}*"
        text += f", {part.brief}" if part.brief and part.verdict != NOT_MEASURED else ""
        items.append(text + ("" if part.decides else " (context)"))
    return "<br>".join(markdown_escape(i) for i in items)


def verdict_table(ledger: list[ClaimResult]) -> str:
    rows = [[f"[{c.id}](claims.md#{c.id.lower()})", c.statement, f"**{c.verdict}**", _key_numbers(c)]
            for c in ledger]
    return markdown_table(["Claim", "Statement", "Verdict", "Parts and key numbers"], rows)


def not_measured(results: Results, ledger: list[ClaimResult], specs: dict, coverage: dict) -> list[str]:
    """Every claim part that could not be checked, then every planned case and backend not run."""
    lines = []
    for claim in ledger:
        if claim.verdict == NOT_MEASURED and claim.note:
            lines.append(f"- {claim.id} as a whole: {claim.note}")
        for part in claim.parts:
            if part.verdict == NOT_MEASURED:
                why = part.details[0] if part.details else "no results"
                lines.append(f"- {claim.id}, {part.name}: {why}")
    for (name, hw), (cov, spec) in sorted(coverage.items()):
        planned, run, missing = missing_lines(cov, spec.get("coverage_by", []), spec.get("coverage_prefer", []))
        gaps = backend_gaps(results, cov)
        if not missing and not gaps:
            continue
        title = spec.get("title", name)
        lines.append(f"- {title} on {hw}: {run} of {planned} planned cases run"
                     + (" (`configs/experiment/" + name + ".yaml`)" if missing else ""))
        lines += [f"  - not run: {m}" for m in missing] + [f"  - backend {g}" for g in gaps]
    return lines


def write_readme(results: Results, ledger: list[ClaimResult], figures: list[Figure], specs: dict,
                 coverage: dict, out: Path) -> Path:
    lines = ["# TileLang claims: reproduction report", "",
             "Regenerated from `results/` by `make paper` (`python -m repro.report --results results --out paper`).",
             "Every number below comes from a results CSV; each verdict's rule, cases and evidence are in "
             "[claims.md](claims.md).", ""]
    lines += ["## Verdicts", "", verdict_table(ledger), ""]
    hardware = results.hardware
    lines += ["## Hardware measured", ""]
    lines += [f"- {hardware_label(results, hw)}" for hw in hardware] or ["- none yet: no results under `results/`"]
    lines += ["", "Environment of each run: [environment.md](environment.md).", ""]
    order = list(specs) + ["loc"]
    headline = sorted((f for f in figures if f.headline),
                      key=lambda f: (order.index(f.key) if f.key in order else len(order), f.hardware, f.stem.name))
    if headline:
        lines += ["## Headline figures", ""]
        for fig in headline:
            rel = Path(os.path.relpath(fig.stem.with_suffix(".png").resolve(), out.resolve())).as_posix()
            lines += [f"![{fig.stem.name}]({rel})", "", f"*{fig.caption}*", ""]
    missing = not_measured(results, ledger, specs, coverage)
    lines += ["## What was not measured", ""]
    lines += missing or ["Nothing: every claim part was checked and every planned case was run."]
    lines += ["", "## More", ""]
    lines += [f"- [{spec.get('title', name)}](tables/{name}.md)" for name, spec in specs.items()]
    lines += [f"- [{title}](tables/{name}.md)" for name, title in
              (("loc", "Code size"), ("portability", "Portability"), ("scaling", "Scaling"))
              if (out / "tables" / f"{name}.md").exists()]
    lines += ["- [Environment appendix](environment.md)", "- [Paper (LaTeX source)](main.tex)", ""]
    if results.notes:
        lines += ["## Notes on the results tree", ""] + [f"- {n}" for n in sorted(results.notes)] + [""]
    return write(out / "README.md", "\n".join(lines))
