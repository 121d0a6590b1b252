"""On a GPU with the baselines cache built (`make baselines`): each `tilelang_upstream` backend,
TileLang's published example kernel, passes the gate and is timed through the harness's own
`measure` on one small case; a case the example does not implement is a `skipped` row.

The cache is the one the environment names before the tests' private REPRO_CACHE (so set
REPRO_BASELINES to run these against a cache elsewhere); without the examples every test skips.
"""
from __future__ import annotations

import pytest

from repro.baselines import default_cache_dir
from repro.measure.case import measure
from repro.measure.experiment import load_experiment
from repro.run.validate import settings_of
from tests.helpers import compose_config

pytestmark = pytest.mark.gpu
BASELINES = default_cache_dir()  # read at import, before the autouse fixture moves REPRO_CACHE

CASES = {  # one small case each, inside what the example implements
    "mla_decode": {"grid": "test", "batch": 4, "h_q": 128, "s_q": 1, "seqlen": 1024, "lengths": "equal",
                   "dtype": "fp16"},
    "sparse_mla": {"t": 256, "s": 2400, "mode": "prefill", "heads": 128, "d_qk": 576, "d_v": 512,
                   "topk": 2048, "dtype": "bf16"},
    "dsa_indexer": {"t": 37, "s": 4099, "mode": "prefill", "heads": 64, "dim": 128, "dtype": "fp8"},
    "dsa_topk": {"t": 40, "s": 8200, "mode": "prefill", "topk": 2048, "dtype": "fp32"},
}
NOT_COMPARED = {"mla_decode": "lse", "sparse_mla": "lse"}  # outputs the examples do not compute
REFUSED = {  # a case each example does not implement -> skipped with its reason
    "mla_decode": {**CASES["mla_decode"], "lengths": "varied"},
    "sparse_mla": {**CASES["sparse_mla"], "t": 400},  # the first queries see < 2048 positions: padded
    "dsa_topk": {**CASES["dsa_topk"], "t": 7000},
}


def _setup(name, monkeypatch):
    monkeypatch.setenv("REPRO_BASELINES", str(BASELINES))
    exp = load_experiment(name)
    backend = exp.backend("tilelang_upstream")
    reason = backend.probe()
    if reason:
        pytest.skip(reason)
    settings = settings_of(compose_config(f"experiment={name}")).replace(
        seed=11, warmup_ms=5.0, rep_ms=30.0, min_reps=3, max_reps=20)
    return exp, backend, settings


@pytest.mark.parametrize("name", sorted(CASES))
def test_upstream_passes_the_gate_and_is_timed(name, monkeypatch):
    exp, backend, settings = _setup(name, monkeypatch)
    case = CASES[name]
    exp.validate_case(case)
    assert backend.refuses(case) is None
    row = measure(exp, backend, case, settings, {"vendor": "nvidia"}, device="cuda")
    assert row["status"] == "ok", row.get("error")
    assert row["median_ms"] > 0 and row["rel_l2"] < settings.tolerance_for(case["dtype"])["rel_l2"]
    if name in NOT_COMPARED:
        assert f"output 1 not compared: {NOT_COMPARED[name]}" in row["error"]
    else:
        assert not row.get("error")


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_cases_outside_the_example_are_skipped(name, monkeypatch):
    exp, backend, settings = _setup(name, monkeypatch)
    row = measure(exp, backend, REFUSED[name], settings, {"vendor": "nvidia"}, device="cuda")
    assert row["status"] == "skipped" and "the example" in row["error"]


def test_a_wrong_output_still_fails_the_gate(monkeypatch):
    """The output the MLA example does return is compared at the usual tolerance."""
    exp, backend, settings = _setup("mla_decode", monkeypatch)
    build = backend.build

    def off_by_a_bit(case, inputs):
        run = build(case, inputs)
        return lambda: (lambda out: (out[0] * 1.01, out[1]))(run())

    import dataclasses

    wrong = dataclasses.replace(backend, build=off_by_a_bit)
    row = measure(exp, wrong, CASES["mla_decode"], settings, {"vendor": "nvidia"}, device="cuda")
    assert row["status"] == "incorrect" and "output 0" in row["error"]


# --- flash_attention: tilelang_upstream (both forward examples) and fa4 ----------------------

def _fa(**kw) -> dict:
    return {"batch": 2, "heads": 8, "heads_kv": 8, "seq_q": 1024, "seq_k": 1024, "head_dim": 128, "causal": True,
            "dtype": "fp16", **kw}


FA_UPSTREAM = {  # example_mha_fwd_bshd.py at head dims 64/128/256, example_gqa_fwd_bshd.py for GQA
    "mha-d128-causal": _fa(), "mha-d64": _fa(head_dim=64, causal=False), "mha-d256": _fa(batch=1, head_dim=256),
    "gqa4to1": _fa(heads=16, heads_kv=4, causal=False), "gqa4to1-causal": _fa(heads=16, heads_kv=4),
}
FA4 = {"bf16-causal": _fa(dtype="bf16"), "gqa": _fa(heads=16, heads_kv=4, causal=False),
       "d192-v128": _fa(heads=16, head_dim=192),
       "varlen": _fa(batch=3, heads_kv=2, seq_q=700, seq_k=700, lengths="1+700+333")}


def _fa_setup(backend_name, monkeypatch):
    monkeypatch.setenv("REPRO_BASELINES", str(BASELINES))
    exp = load_experiment("flash_attention")
    backend = exp.backend(backend_name)
    reason = backend.probe()
    if reason:
        pytest.skip(reason)
    settings = settings_of(compose_config("experiment=flash_attention")).replace(
        seed=11, warmup_ms=5.0, rep_ms=30.0, min_reps=3, max_reps=20)
    return exp, backend, settings


def _ok(exp, backend, case, settings):
    exp.validate_case(case)
    assert backend.refuses(case) is None
    row = measure(exp, backend, case, settings, {"vendor": "nvidia"}, device="cuda")
    assert row["status"] == "ok", row.get("error")
    assert row["median_ms"] > 0 and row["rel_l2"] < settings.tolerance_for(case["dtype"])["rel_l2"]
    assert not row.get("error")


@pytest.mark.parametrize("key", sorted(FA_UPSTREAM))
def test_flash_attention_upstream_passes_the_gate_and_is_timed(key, monkeypatch):
    exp, backend, settings = _fa_setup("tilelang_upstream", monkeypatch)
    _ok(exp, backend, FA_UPSTREAM[key], settings)


@pytest.mark.parametrize("case", [_fa(head_dim=192, heads=16), _fa(batch=3, seq_q=700, seq_k=700, lengths="1+700+333"),
                                  _fa(dtype="bf16")])
def test_flash_attention_upstream_skips_what_the_examples_lack(case, monkeypatch):
    exp, backend, settings = _fa_setup("tilelang_upstream", monkeypatch)
    row = measure(exp, backend, case, settings, {"vendor": "nvidia"}, device="cuda")
    assert row["status"] == "skipped" and ("the example" in row["error"] or "implements dtype fp16" in row["error"])


@pytest.mark.parametrize("key", sorted(FA4))
def test_fa4_passes_the_gate_and_is_timed(key, monkeypatch):
    exp, backend, settings = _fa_setup("fa4", monkeypatch)
    import inspect

    from experiments import upstream

    fa4 = upstream.baseline_module("fa4", "flash_attn.cute")  # the parameters build_fa4 relies on
    assert list(inspect.signature(fa4.flash_attn_varlen_func).parameters)[:8] == [
        "q", "k", "v", "qv", "cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "max_seqlen_k"]
    assert "causal" in inspect.signature(fa4.flash_attn_func).parameters
    _ok(exp, backend, FA4[key], settings)
