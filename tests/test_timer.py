"""The timer's statistics (its device part runs in tests/gpu)."""
from __future__ import annotations

import math
import re
from pathlib import Path

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


# The timer's knobs come from the run's settings, never from defaults of its own (issue 13).

def _timing(**changes):
    from repro.measure.settings import TimerSettings

    base = dict(warmup_ms=0.0, rep_ms=1.0, min_reps=7, max_reps=7, flush_l2=False, cuda_graph=False)
    return TimerSettings(**{**base, **changes})


def test_cpu_timer_takes_its_repetitions_from_the_settings():
    from repro.measure.cpu_timer import time_cpu

    calls = []
    timing = time_cpu(lambda: calls.append(1), _timing(min_reps=7, max_reps=7))
    assert timing.reps == 7 and len(calls) >= 8  # warm-up, then exactly the 7 samples
    assert time_cpu(lambda: None, _timing(rep_ms=1e9, min_reps=3, max_reps=12)).reps == 12


def test_cpu_timer_warms_up_for_warmup_ms():
    import time

    from repro.measure.cpu_timer import time_cpu

    start = time.perf_counter()
    time_cpu(lambda: time.sleep(0.001), _timing(warmup_ms=60.0, min_reps=1, max_reps=1))
    assert time.perf_counter() - start >= 0.06


@pytest.mark.parametrize("field,value,needle", [
    ("warmup_ms", float("nan"), "bench.warmup_ms"),
    ("warmup_ms", -1.0, "bench.warmup_ms"),
    ("rep_ms", float("inf"), "bench.rep_ms"),
    ("rep_ms", 0.0, "bench.rep_ms"),
    ("min_reps", 0, "bench.min_reps"),
    ("max_reps", 3, "bench.max_reps=3 is below bench.min_reps=7"),
    ("flush_l2", "yes", "bench.flush_l2"),
])
def test_timer_settings_refuse_what_cannot_be_timed(field, value, needle):
    from repro.measure.settings import SettingsError

    with pytest.raises(SettingsError, match=re.escape(needle)):
        _timing(**{field: value})


def test_interleaved_trials_give_each_ratio_an_interval(tmp_path):
    """Backends of one case are timed in alternating trials; each timed row keeps its trial
    medians, and a non-baseline row its speedup over the baseline with a 95% interval."""
    import subprocess
    import sys

    import pandas as pd

    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "run.py", "experiment=selftest", "backends=[matmul,einsum]",
                          "bench.isolate=false", "bench.trials=4", "sizes=[16,32]", f"results_dir={tmp_path}"],
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    df = pd.read_csv(tmp_path / "cpu" / "selftest.csv").set_index(["case", "backend"])
    for case in ("dtype=fp32,n=16", "dtype=fp32,n=32"):
        base, other = df.loc[(case, "matmul")], df.loc[(case, "einsum")]
        assert base["trials"] == 4 and len(str(base["trial_ms"]).split(";")) == 4
        assert pd.isna(base.get("speedup"))  # the baseline has no ratio to itself
        assert other["speedup_lo"] <= other["speedup"] <= other["speedup_hi"]
        assert other["speedup_lo"] > 0
    sums = pd.read_csv(tmp_path / "cpu" / "artifacts" / "selftest.checksums.csv")  # beside the rows
    assert len(sums) == 2 * 2 * 2 and set(sums["backend"]) == {"matmul", "einsum"}


def test_case_interval_pairs_trials():
    from repro.measure.stats import case_interval, geomean_interval

    point, lo, hi = case_interval([2.0, 2.2, 1.8], [1.0, 1.1, 0.9])  # exactly 2x in every pair
    assert abs(point - 2.0) < 1e-12 and abs(lo - 2.0) < 1e-9 and abs(hi - 2.0) < 1e-9
    point, lo, hi = case_interval([1.0, 1.0, 1.0], [0.9, 1.1, 1.0])
    assert lo < 1.0 < hi  # straddles parity: within noise
    assert case_interval([1.0], [0.5])[0] == 2.0 and math.isnan(case_interval([1.0], [0.5])[1])
    lo, hi = geomean_interval([([2.0, 2.0], [1.0, 1.0]), ([1.0, 1.2], [1.0, 1.0])])
    assert lo < 2 ** 0.5 * 1.1 ** 0.5 < hi
    assert geomean_interval([([1.0], [1.0])]) is None


def test_a_candidate_that_does_not_compile_is_named(capsys):
    from repro.measure.tuning import compile_all, log_failure

    def broken():
        raise RuntimeError("ptxas error: too many registers\nmore")

    built = compile_all([lambda: 1, broken], workers=2)
    assert built[0] == 1 and isinstance(built[1], RuntimeError)
    log_failure({"block_M": 256}, "could not be built", built[1])
    err = capsys.readouterr().err
    assert "[search] candidate {'block_M': 256} could not be built: RuntimeError: ptxas error: too many registers" in err


def test_the_one_search_picks_the_fastest_that_builds_and_skips_cached_keys(tmp_path, monkeypatch, capsys):
    from repro.measure import timer, tuning

    cost = {"a": {1: 3.0, 2: 1.0, 3: 2.0}, "b": {1: 1.0, 2: 5.0, 3: 4.0}}
    monkeypatch.setattr(timer, "time_cuda", lambda fn, settings, flusher=None: timer.summarize([fn()]))
    monkeypatch.setattr(tuning, "CACHE_DIR", tmp_path)
    cache = tuning.KnobCache("toy")
    cache.put("c", {"choice": 9})

    def compile_one(case, cand):
        if case["name"] == "b" and cand == 1:
            raise RuntimeError("no valid warp partition")
        return cand

    chosen = tuning.search(cache, {k: {"name": k} for k in ("a", "b", "c")}, lambda case: [1, 2, 3], compile_one,
                           runner=lambda case, x, cand, built: (lambda: cost[case["name"]][built]),
                           make_inputs=lambda case: {}, encode=lambda cand: {"choice": cand})
    assert chosen == {"a": {"choice": 2}, "b": {"choice": 3}}  # b's fastest does not compile
    assert tuning.KnobCache("toy").data == {"a": {"choice": 2}, "b": {"choice": 3}, "c": {"choice": 9}}
    assert "[search] candidate 1 could not be built: RuntimeError: no valid warp partition" in capsys.readouterr().err


def test_a_searched_schedule_is_kept_per_version_of_the_kernel_sources(tmp_path, monkeypatch):
    """A schedule searched for one version of the kernel files is not taken by an edited version
    (nor by a cache keyed without sources), and the edit back finds it again."""
    from repro.measure import tuning

    monkeypatch.setattr(tuning, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(tuning, "ROOT", tmp_path)
    kernel = tmp_path / "kernels" / "toy.py"
    kernel.parent.mkdir()
    kernel.write_text("block = 64\n")
    tuning.KnobCache("toy", ["kernels/toy*.py"]).put("M=1", {"block": 32})
    assert tuning.KnobCache("toy", ["kernels/toy*.py"]).get("M=1") == {"block": 32}
    assert tuning.KnobCache("toy", ["kernels/toy*.py"]).describe("M=1") == "cached"
    assert tuning.KnobCache("toy").get("M=1") is None
    kernel.write_text("block = 128\n")
    tuning.sources_hash.cache_clear()
    edited = tuning.KnobCache("toy", ["kernels/toy*.py"])
    assert edited.get("M=1") is None and edited.describe("M=1") == "default"
    kernel.write_text("block = 64\n")
    tuning.sources_hash.cache_clear()
    assert tuning.KnobCache("toy", ["kernels/toy*.py"]).get("M=1") == {"block": 32}


def test_mla_schedules_are_searched_per_token_scale(monkeypatch):
    """The MLA decode search keys a schedule by the cached tokens' power of two: the short grid's
    winner is not applied to 8k sequences, while equal and varied lengths of one size share one."""
    import torch

    from experiments import mla_decode as E

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "GPU")
    case = {"batch": 128, "h_q": 128, "s_q": 1, "dtype": "bf16", "seqlen": 8192, "lengths": "equal"}
    short = {**case, "seqlen": 64, "lengths": "short"}
    assert E._knob_key(case) != E._knob_key(short)
    assert E._knob_key(case) == E._knob_key({**case, "lengths": "varied"})
    assert E._knob_key(case) != E._knob_key({**case, "h_q": 64})
    assert "tokens~2^20" in E._knob_key(case)
