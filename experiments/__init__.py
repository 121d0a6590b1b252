"""One module per experiment; each defines `EXPERIMENT` (see repro.experiment)."""
