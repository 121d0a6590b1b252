"""The reproduction report: tables, figures, claims ledger and environment appendix from results/.

Everything here reads `results/` (and the report/claims configs) and nothing else, and writes
`paper/`. The same results give byte-identical outputs: rows are sorted, figures carry no
timestamps, and dates come from the run manifests, never from the clock.
"""
