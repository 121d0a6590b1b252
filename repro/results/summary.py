"""The table printed at the end of a sweep: median time per backend and speedup vs the baseline."""
from __future__ import annotations

import pandas as pd

from repro.results.store import Status


def summary_table(df: pd.DataFrame, baseline: str) -> pd.DataFrame:
    measured = df[df["status"] == Status.OK].dropna(subset=["median_ms"])
    if measured.empty:
        return pd.DataFrame()
    table = measured.pivot_table(index="case", columns="backend", values="tflops", aggfunc="first")
    if baseline in table.columns:
        for col in [c for c in table.columns if c != baseline]:
            table[f"{col}/{baseline}"] = table[col] / table[baseline]
    return table.sort_index()


def print_summary(df: pd.DataFrame, baseline: str) -> None:
    table = summary_table(df, baseline)
    if table.empty:
        print("no timed rows")
    else:
        with pd.option_context("display.max_rows", 500, "display.width", 200, "display.max_columns", 20):
            print("TFLOPS per backend (and speedup vs the baseline):")
            print(table.round(3).to_string())
    counts = df["status"].value_counts().to_dict()
    print("rows by status: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
