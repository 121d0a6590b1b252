"""paper/README.md: the GitHub summary (ledger at a glance, headline figures, where the rest is)."""
from __future__ import annotations

import os
from pathlib import Path

from repro.report.claims import ClaimResult
from repro.report.environment import hardware_label
from repro.report.figures import Figure
from repro.report.load import Results
from repro.report.render import markdown_table, write


def write_readme(results: Results, ledger: list[ClaimResult], figures: list[Figure], specs: dict,
                 out: Path) -> Path:
    lines = ["# TileLang claims: reproduction report", "",
             "Regenerated from `results/` by `make paper` (`python -m repro.report --results results --out paper`).",
             "Every number below comes from a results CSV; each verdict links its evidence in "
             "[claims.md](claims.md).", ""]
    lines += ["## Verdicts", ""]
    rows = [[f"[{c.id}](claims.md#{c.id.lower()})", c.statement, f"**{c.verdict}**", c.where] for c in ledger]
    lines += [markdown_table(["Claim", "Statement", "Verdict", "Parts"], rows), ""]
    hardware = results.hardware
    lines += ["## Hardware measured", ""]
    lines += [f"- {hardware_label(results, hw)}" for hw in hardware] or ["- none yet: no results under `results/`"]
    lines.append("")
    headline = sorted((f for f in figures if f.headline), key=lambda f: (f.key, f.hardware, f.stem.name))
    if headline:
        lines += ["## Headline figures", ""]
        for fig in headline:
            rel = Path(os.path.relpath(fig.stem.with_suffix(".png").resolve(), out.resolve())).as_posix()
            lines += [f"![{fig.stem.name}]({rel})", "", f"*{fig.caption}*", ""]
    lines += ["## More", ""]
    lines += [f"- [{spec.get('title', name)}](tables/{name}.md)" for name, spec in specs.items()]
    lines += [f"- [{title}](tables/{name}.md)" for name, title in
              (("loc", "Code size"), ("portability", "Portability"), ("scaling", "Scaling"))
              if (out / "tables" / f"{name}.md").exists()]
    lines += ["- [Environment appendix](environment.md)", "- [Paper (LaTeX source)](main.tex)", ""]
    if results.notes:
        lines += ["## Notes on the results tree", ""] + [f"- {n}" for n in sorted(results.notes)] + [""]
    return write(out / "README.md", "\n".join(lines))
