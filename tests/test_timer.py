"""The timer's statistics (its device part runs in tests/gpu)."""
from __future__ import annotations

import numpy as np
import pytest

from repro.measure.timer import quantile, rep_count, summarize


def test_summary_matches_numpy():
    rng = np.random.default_rng(0)
    samples = rng.lognormal(size=101).tolist()
    t = summarize(samples)
    assert t.median_ms == pytest.approx(np.median(samples))
    assert t.p25_ms == pytest.approx(np.percentile(samples, 25))
    assert t.p75_ms == pytest.approx(np.percentile(samples, 75))
    assert t.min_ms == min(samples) and t.max_ms == max(samples) and t.reps == 101
    assert t.iqr_ms == pytest.approx(t.p75_ms - t.p25_ms)


def test_median_resists_outliers():
    assert summarize([1.0] * 9 + [1000.0]).median_ms == 1.0


def test_quantile_edges():
    assert quantile([3.0], 0.5) == 3.0
    assert quantile([1.0, 2.0], 1.0) == 2.0
    with pytest.raises(ValueError):
        summarize([])


def test_rep_count_fills_budget_within_bounds():
    assert rep_count(1.0, 100, 10, 200) == 100
    assert rep_count(50.0, 100, 10, 200) == 10
    assert rep_count(0.001, 100, 10, 200) == 200
    assert rep_count(0.0, 100, 10, 200) == 200
