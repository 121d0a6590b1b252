"""The quick scoreboard: every TileLang kernel at a few cases against its strongest baseline.

plan.py reads configs/quick.yaml into typed entries; measure.py runs them through the sweeps'
own `execute` (one timer, one gate, interleaved trials) into results/<card>/quick.csv;
compare.py sets a record against the previous committed one and marks regressions; __main__.py
is the command line (`make quick`, `python -m repro.quick`).
"""
