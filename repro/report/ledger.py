"""Writing the claims ledger as Markdown (GitHub) and LaTeX (the paper)."""
from __future__ import annotations

import os
from pathlib import Path

from repro.report.claims import ClaimResult
from repro.report.render import latex_escape, latex_table, markdown_escape, markdown_table, relative, write

RULES = ("Verdicts use measured rows only (status `ok`); published third-party numbers never decide one. "
         "A claim is `supported` when every part holds, `not measured` when no part could be checked, "
         "`not supported` when every checked part fails, and `partly supported` otherwise (the parts say where). "
         "A claim about speed stays `not measured` until one of its hardware parts is measured: line counts and "
         "builds alone never carry it. Parts marked *context* are shown beside the claim and never decide it. "
         "Per-group results only ever lower a part's verdict, never lift a failing one; a part measured against "
         "a stand-in for the baseline the claim names is at most partly supported. Each measured part names "
         "the card it was measured on, and says so where that is not the card the claim names. "
         "Rules and thresholds: `configs/claims.yaml`; each speedup part states the cases and thresholds it used.")


def _part_title(part) -> str:
    return f"{part.name}: {part.verdict}" + ("" if part.decides else " (context, does not decide)")


def _link(item, results_parent: Path, out: Path) -> tuple[str, str]:
    """(text, href) of one piece of evidence: a results path or a written figure."""
    if isinstance(item, Path):
        png = item.with_suffix(".png")
        return png.name, Path(os.path.relpath(png.resolve(), out.resolve())).as_posix()
    return str(item), relative(str(item), results_parent, out)


def _evidence(part, results_parent: Path, out: Path) -> list[tuple[str, str]]:
    return list(dict.fromkeys(_link(e, results_parent, out) for e in part.evidence))


def summary_rows(claims: list[ClaimResult]) -> list[list[str]]:
    return [[c.id, c.statement, c.hardware_named, c.verdict, c.where] for c in claims]


def ledger_markdown(claims: list[ClaimResult], results_parent: Path, out: Path) -> str:
    lines = ["# Claims ledger", "", RULES, ""]
    rows = [[f"[{c.id}](#{c.id.lower()})", c.statement, c.hardware_named, f"**{c.verdict}**", c.where]
            for c in claims]
    lines += [markdown_table(["Claim", "Statement", "Hardware named", "Verdict", "Parts"], rows), ""]
    for claim in claims:
        lines += [f"## {claim.id}", "", f"> {claim.statement}", ">", f"> — {claim.source}", "",
                  f"**Verdict: {claim.verdict}.**", ""]
        lines += [markdown_escape(claim.note), ""] if claim.note else []
        for part in claim.parts:
            lines.append(f"- **{markdown_escape(_part_title(part))}.** {markdown_escape(part.numbers)}".rstrip())
            lines += [f"  - {markdown_escape(d)}" for d in ([part.note] if part.note else []) + part.details]
            links = _evidence(part, results_parent, out)
            if links:
                lines.append("  - evidence: " + ", ".join(f"[{t}]({h})" for t, h in links))
        lines.append("")
    return "\n".join(lines)


def ledger_latex(claims: list[ClaimResult], results_parent: Path, out: Path) -> str:
    parts = [latex_escape(RULES) + "\n",
             latex_table(["Claim", "Statement", "Hardware named", "Verdict"],
                         [r[:4] for r in summary_rows(claims)], "Claims ledger: verdicts from measured results.",
                         "tab:claims", align="lp{0.5\\linewidth}p{0.14\\linewidth}p{0.14\\linewidth}")]
    for claim in claims:
        parts.append(f"\\subsection*{{{claim.id}: {latex_escape(claim.verdict)}}}\n"
                     f"\\emph{{{latex_escape(claim.statement)}}} ({latex_escape(claim.source)})\n"
                     + (f"\n{latex_escape(claim.note)}\n" if claim.note else ""))
        items = []
        for part in claim.parts:
            text = f"\\item \\textbf{{{latex_escape(_part_title(part))}.}} "
            text += latex_escape(part.numbers)
            sub = [latex_escape(d) for d in ([part.note] if part.note else []) + part.details]
            sub += ["evidence: " + ", ".join(f"\\nolinkurl{{{t}}}"
                                             for t, _ in _evidence(part, results_parent, out))] \
                if part.evidence else []
            if sub:
                text += "\n  \\begin{itemize}\n" + "".join(f"  \\item {s}\n" for s in sub) + "  \\end{itemize}"
            items.append(text)
        if items:
            parts.append("\\begin{itemize}\n" + "\n".join(items) + "\n\\end{itemize}\n")
    return "\n".join(parts)


def write_ledger(claims: list[ClaimResult], results_parent: Path, out: Path) -> list[Path]:
    return [write(out / "claims.md", ledger_markdown(claims, results_parent, out)),
            write(out / "claims.tex", ledger_latex(claims, results_parent, out))]
