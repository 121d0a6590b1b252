"""One module per experiment; each defines `EXPERIMENT` (see repro.measure.experiment)."""
