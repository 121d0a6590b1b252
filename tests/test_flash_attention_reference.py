"""FlashAttention on the CPU: the reference against a naive loop, FLOPs, input validation,
the experiment's config, and the Triton kernel in Triton's interpreter."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import flash_attention as fa_exp
from kernels.flash_attention import check_tensors, prepare, validate


def naive_attention(q, k, v, causal):
    """One query row at a time, straight from the definition (float64)."""
    b, s_q, h, d = q.shape
    s_k, group = k.shape[1], h // k.shape[2]
    out = torch.zeros(b, s_q, h, v.shape[3], dtype=torch.float64)
    for bi, hi, r in ((bi, hi, r) for bi in range(b) for hi in range(h) for r in range(s_q)):
        n = min(s_k, r + s_k - s_q + 1) if causal else s_k
        if n <= 0:
            continue  # no visible key: the row stays 0
        scores = [float(q[bi, r, hi].double() @ k[bi, c, hi // group].double()) / math.sqrt(d) for c in range(n)]
        top = max(scores)
        w = [math.exp(s - top) for s in scores]
        out[bi, r, hi] = sum(wi * v[bi, c, hi // group].double() for c, wi in enumerate(w)) / sum(w)
    return out


@pytest.mark.parametrize("s_q,s_k,h,h_kv,causal", [
    (7, 7, 2, 2, True), (5, 9, 4, 2, True), (9, 5, 2, 1, True), (6, 11, 4, 1, False), (8, 8, 2, 2, False)])
def test_reference_matches_naive_loop(s_q, s_k, h, h_kv, causal, monkeypatch):
    monkeypatch.setattr(fa_exp, "REF_CHUNK_ELEMS", 16)  # force several query-row chunks
    case = {"batch": 2, "heads": h, "heads_kv": h_kv, "seq_q": s_q, "seq_k": s_k, "head_dim": 16,
            "causal": causal, "dtype": "bf16"}
    inputs = fa_exp.make_inputs(case, 3, "cpu")
    assert all(inputs[n].abs().sum() > 0 for n in ("q", "k", "v"))  # never zeros
    ref = fa_exp.reference(case, inputs)
    assert ref.dtype == torch.float32 and ref.shape == inputs["q"].shape
    torch.testing.assert_close(ref.double(), naive_attention(inputs["q"], inputs["k"], inputs["v"], causal),
                               rtol=1e-4, atol=1e-5)


def test_causal_flops_are_the_halved_formula_when_square():
    case = {"batch": 4, "heads": 16, "heads_kv": 16, "seq_q": 4096, "seq_k": 4096, "head_dim": 128,
            "dtype": "fp16", "causal": False}
    full = fa_exp.flops(case)
    assert full == 4 * 4 * 16 * 4096 * 4096 * 128
    assert fa_exp.flops({**case, "causal": True}) == full / 2


@pytest.mark.parametrize("s_q,s_k", [(512, 2048), (1000, 3001), (3001, 1000), (777, 777)])
def test_causal_flops_track_the_exact_pair_count(s_q, s_k):
    case = {"batch": 1, "heads": 1, "heads_kv": 1, "seq_q": s_q, "seq_k": s_k, "head_dim": 64,
            "dtype": "fp16", "causal": True}
    exact = sum(max(0, min(s_k, r + s_k - s_q + 1)) for r in range(s_q))
    assert abs(fa_exp.visible_pairs(case) - exact) <= s_q / 2 + 1e-9  # the diagonal's half


@pytest.mark.parametrize("args,message", [
    ((1, 8, 8, 128, 128, 80, "float16"), "head dim 80 unsupported"),
    ((1, 8, 8, 128, 128, 512, "float16"), "head dim 512 unsupported"),
    ((1, 8, 3, 128, 128, 128, "float16"), "not a multiple of 3 KV heads"),
    ((1, 8, 8, 128, 128, 128, "float32"), "dtype float32 unsupported"),
    ((1, 8, 8, 0, 128, 128, "float16"), "empty input"),
])
def test_unsupported_requests_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        validate(*args)


def test_tensor_checks_run_before_any_launch():
    q = torch.randn(1, 16, 8, 64, dtype=torch.float16)
    kv = torch.randn(1, 16, 3, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="not a multiple of 3 KV heads"):
        check_tensors(q, kv, kv)
    with pytest.raises(ValueError, match="disagree"):
        wide = torch.randn(1, 16, 8, 128, dtype=torch.float16)
        check_tensors(q, wide, wide)
    with pytest.raises(ValueError, match="dtypes differ"):
        check_tensors(q, q.bfloat16(), q)
    with pytest.raises(ValueError, match="CUDA tensors"):
        prepare(q, q, q)


def test_config_composes_into_the_fa3_grid():
    from helpers import compose_config
    from repro.measure.experiment import load_experiment
    from repro.run.validate import validate as validate_config

    exp = load_experiment("flash_attention")
    backends, cases = validate_config(compose_config("experiment=flash_attention"), exp)
    assert {"tilelang", "triton", "fa2", "sdpa_flash", "cudnn", "fa3", "torch"} <= set(backends)
    assert set(backends) <= set(exp.backend_names)
    grid = [c for c in cases if c["heads"] * c["head_dim"] == 2048 and c["batch"] * c["seq_q"] == 16384]
    assert len(grid) == 6 * 3 * 2 * 2  # seqlens x head dims x causal x dtypes
    assert any(c["heads"] == 64 and c["heads_kv"] == 8 for c in cases)
    assert any(c["batch"] == 1 and c["seq_q"] == 32768 for c in cases)
    reported = exp.reported(compose_config("experiment=flash_attention"))
    keys = {tuple(sorted(c.items())) for c in cases}
    assert {r["backend"] for r in reported} == {"fa2_paper", "triton_paper", "cudnn_paper", "fa3_paper"}
    mla = [c for c in cases if c["head_dim"] == 192]
    assert {c["seq_q"] for c in mla} == {2048, 4096, 8192, 16384, 32768}
    varlen = [c for c in cases if "lengths" in c]
    assert varlen and all(1 in fa_exp.seq_lengths(c) and max(fa_exp.seq_lengths(c)) >= 4096 for c in varlen[:2])
    for r in reported:  # each reported row sits on a measured case
        params = {k: v for k, v in r.items() if k not in ("backend", "tflops", "source")}
        assert tuple(sorted(params.items())) in keys


@pytest.mark.parametrize("override,message", [
    ("head_dims=[80]", "head dim 80 unsupported"), ("gqa.heads=[[30,8]]", "not a multiple of 8 KV heads")])
def test_config_refuses_unsupported_cases(override, message):
    from helpers import compose_config
    from repro.measure.experiment import load_experiment
    from repro.run.validate import ConfigError, validate as validate_config

    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config("experiment=flash_attention", override), load_experiment("flash_attention"))


TRITON_INTERPRETED = """
import torch
from experiments.flash_attention import attention_reference
from kernels.triton.flash_attention import flash_attention
torch.manual_seed(0)
for b, s_q, s_k, h, h_kv, causal, bm, bn in [(1, 37, 37, 2, 1, True, 32, 16), (2, 20, 45, 4, 2, True, 16, 16),
                                             (1, 50, 23, 2, 2, True, 16, 16), (1, 33, 70, 2, 1, False, 16, 32)]:
    q = torch.randn(b, s_q, h, 64, dtype=torch.float16)
    k, v = (torch.randn(b, s_k, h_kv, 64, dtype=torch.float16) for _ in range(2))
    o = flash_attention(q, k, v, causal, knobs=dict(BM=bm, BN=bn, num_warps=4, num_stages=1))
    err = (o.float() - attention_reference(q, k, v, causal)).abs().max().item()
    assert err < 5e-3, (b, s_q, s_k, h, h_kv, causal, err)
print("ok")
"""


def test_triton_kernel_in_the_interpreter():
    pytest.importorskip("triton")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", TRITON_INTERPRETED], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


def test_mla_prefill_inputs_have_a_narrower_v():
    case = {"batch": 1, "heads": 2, "heads_kv": 2, "seq_q": 5, "seq_k": 7, "head_dim": 192, "causal": True,
            "dtype": "bf16"}
    inputs = fa_exp.make_inputs(case, 0, "cpu")
    assert inputs["v"].shape[-1] == 128 and inputs["out"].shape == (1, 5, 2, 128)
    ref = fa_exp.reference(case, inputs)
    assert ref.shape == (1, 5, 2, 128)
    torch.testing.assert_close(ref.double(), naive_attention(inputs["q"], inputs["k"], inputs["v"], True),
                               rtol=1e-4, atol=1e-5)
    assert fa_exp.flops(case) == 2 * 2 * (192 + 128) * fa_exp.visible_pairs(case)


def test_varlen_case_is_its_sequences():
    lengths = [1, 6, 3]
    case = {"batch": 3, "heads": 4, "heads_kv": 2, "seq_q": 6, "seq_k": 6, "head_dim": 16, "causal": True,
            "dtype": "fp16", "lengths": "1+6+3"}
    fa_exp.validate_case({**case, "head_dim": 64})
    with pytest.raises(ValueError, match="lengths"):
        fa_exp.validate_case({**case, "head_dim": 64, "lengths": "1+6"})
    inputs = fa_exp.make_inputs(case, 1, "cpu")
    assert inputs["q"].shape == (10, 4, 16) and inputs["cu_seqlens"].tolist() == [0, 1, 7, 10]
    ref = fa_exp.reference(case, inputs)
    at = 0
    for n in lengths:  # each packed sequence is attention over itself alone
        sl = slice(at, at + n)
        want = naive_attention(inputs["q"][sl][None], inputs["k"][sl][None], inputs["v"][sl][None], True)[0]
        torch.testing.assert_close(ref[sl].double(), want, rtol=1e-4, atol=1e-5)
        at += n
    per_seq = sum(fa_exp.flops({**case, "batch": 1, "seq_q": n, "seq_k": n, "lengths": str(n)}) for n in lengths)
    assert fa_exp.flops(case) == per_seq == sum(4 * 4 * 16 * (n * n / 2) for n in lengths)
