"""On the CPU: the FlashAttention backward kernels compile for sm_90a (a few variants), the FLOP
formula, the float32 gradient reference (its chunking, GQA sums), the tolerances against an
off-by-one causal mask, and the train_step data, model and agreement check on a tiny config."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from experiments import flash_attention as fa
from experiments import flash_attention_bwd as fab_exp
from experiments import train_step as ts
from kernels import flash_attention_bwd as fab
from kernels._compile import HOPPER

ROOT_CFG = "configs/experiment"


# (batch, heads, kv_heads, s_q, s_k, dim, causal, dtype): MHA causal with ragged lengths, and GQA 8:1.
VARIANTS = [(2, 4, 4, 1000, 1000, 128, True, "bfloat16"), (1, 8, 1, 65, 1000, 64, False, "float16")]


@pytest.mark.parametrize("shape", VARIANTS, ids=["mha-d128-causal-bf16", "gqa8-d64-fp16"])
def test_backward_compiles_for_hopper(shape):
    pre, main = fab.compile_backward(*shape, target=HOPPER)
    src = main.get_kernel_source()
    assert "wgmma" in src  # Hopper tensor-core GEMMs
    assert "atomic" in src.lower() or "reduce" in src.lower()  # dQ by reduce-add
    assert "AllReduce" in pre.get_kernel_source()  # delta = rowsum(dO * O), a row reduction


def test_forward_with_lse_compiles_for_hopper():
    kernel = fab.compile_forward(2, 4, 2, 1000, 1000, 128, True, "bfloat16", target=HOPPER)
    src = kernel.get_kernel_source()
    assert "wgmma" in src and "exp2f" in src and "log2f" in src  # the row LSE: log2 of the denominator


def test_validate_refuses_what_is_not_implemented():
    with pytest.raises(ValueError, match="head dim"):
        fab.validate(1, 4, 4, 64, 64, 256, False, "bfloat16")
    with pytest.raises(ValueError, match="causal"):
        fab.validate(1, 4, 4, 128, 64, 128, True, "bfloat16")
    with pytest.raises(ValueError, match="multiple"):
        fab.validate(1, 6, 4, 64, 64, 128, False, "bfloat16")


def _case(b=16, h=16, hk=16, s=1024, d=128, causal=False):
    return {"batch": b, "heads": h, "heads_kv": hk, "seq_q": s, "seq_k": s, "head_dim": d, "causal": causal,
            "dtype": "bf16"}


def test_flops_are_two_and_a_half_forwards():
    case = _case()
    assert fab_exp.flops(case) == 10.0 * 16 * 16 * 128 * 1024 * 1024
    assert fab_exp.flops(case) == pytest.approx(2.5 * fa.flops(case))
    causal = _case(causal=True)
    assert fab_exp.flops(causal) == pytest.approx(fab_exp.flops(case) / 2)
    assert fab_exp.flops(causal) == pytest.approx(2.5 * fa.flops(causal))


def test_grid_from_config():
    cfg = OmegaConf.load(f"{ROOT_CFG}/flash_attention_bwd.yaml")
    cfg.dtype = None
    cases = fab_exp.cases(cfg)
    assert {c["head_dim"] for c in cases} == {64, 128}
    assert all(c["batch"] * c["seq_q"] == 16384 for c in cases)
    assert any(c["heads"] == 8 * c["heads_kv"] for c in cases)
    for c in cases:
        fab_exp.validate_case(c)


def _plain_grads(q, k, v, do, causal, shift=0):
    """Unchunked float32 autograd; `shift` moves the causal diagonal (an off-by-one mask)."""
    b, s_q, h, d = q.shape
    group = h // k.shape[2]
    leaves = [t.float().requires_grad_() for t in (q, k, v)]
    qf, kf, vf = leaves[0].transpose(1, 2), leaves[1].repeat_interleave(group, 2).transpose(1, 2), \
        leaves[2].repeat_interleave(group, 2).transpose(1, 2)
    scores = qf @ kf.transpose(-1, -2) / d**0.5
    if causal:
        s_k = k.shape[1]
        mask = torch.ones(s_q, s_k, dtype=torch.bool).tril(s_k - s_q + shift)
        scores = scores.masked_fill(~mask, float("-inf"))
    out = (torch.softmax(scores, -1) @ vf).transpose(1, 2)
    return torch.autograd.grad(out, leaves, do.float())


@pytest.mark.parametrize("causal", [False, True])
def test_reference_gradients_chunked_and_gqa(monkeypatch, causal):
    monkeypatch.setattr(fab_exp, "REF_CHUNK_ELEMS", 4 * 40)  # several row chunks per head
    case = {**_case(b=2, h=4, hk=2, s=0, d=64, causal=causal), "seq_q": 33, "seq_k": 40}
    inputs = fab_exp.make_inputs(case, 0, "cpu")
    got = fab_exp.reference(case, inputs)
    want = _plain_grads(inputs["q"], inputs["k"], inputs["v"], inputs["do"], causal)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-5)


def test_tolerances_catch_an_off_by_one_causal_mask():
    tol = OmegaConf.load(f"{ROOT_CFG}/flash_attention_bwd.yaml").tolerance
    from repro.measure.gate import compare

    case = {**_case(b=1, h=2, hk=2, d=64, causal=True), "seq_q": 65, "seq_k": 65}
    inputs = fab_exp.make_inputs(case, 3, "cpu")
    ref = fab_exp.reference(case, inputs)
    for shift in (1,):
        wrong = _plain_grads(inputs["q"], inputs["k"], inputs["v"], inputs["do"], True, shift)
        for dtype in ("bf16", "fp16"):
            assert not all(compare(w, r, dict(tol[dtype]))["passed"] for w, r in zip(wrong, ref))


TINY = {"layers": 2, "d_model": 128, "heads": 2, "seq": 32, "batch": 2, "vocab": 16, "steps": 4, "log_every": 2,
        "loss_tol": 0.05, "dtype": "bf16"}


def test_train_step_data_is_seeded_and_in_range():
    a, b, c = ts.make_data(TINY, 5, "cpu"), ts.make_data(TINY, 5, "cpu"), ts.make_data(TINY, 6, "cpu")
    assert a.shape == (TINY["steps"] * TINY["batch"], TINY["seq"] + 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert int(a.min()) >= 0 and int(a.max()) < TINY["vocab"]
    # order 2: each (class of the byte before last, last byte) is followed by <= CANDIDATES bytes
    follow: dict = {}
    for row in a.tolist():
        for x, y, z in zip(row, row[1:], row[2:]):
            follow.setdefault((x % ts.CLASSES, y), set()).add(z)
    assert max(len(v) for v in follow.values()) <= ts.CANDIDATES


def test_train_step_model_shapes_and_curve_on_cpu():
    model = ts.make_model(TINY, ts.sdpa_attention)
    assert sum(p.numel() for p in model.parameters()) == ts.parameters(TINY)
    tokens = ts.make_data(TINY, 0, "cpu")[:TINY["batch"], :-1]
    assert model(tokens).shape == (TINY["batch"], TINY["seq"], TINY["vocab"])
    curve, logged, tokens_per_s, step, batch = ts.train(TINY, 0, "cpu", ts.sdpa_attention)
    again = ts.train(TINY, 0, "cpu", ts.sdpa_attention)[0]
    assert logged == [0, 2, 3] and curve.shape == (3,) and tokens_per_s > 0
    assert torch.equal(curve, again)  # same seed, same data and init: the same curve on the CPU
    assert torch.isfinite(step(batch))


def test_train_step_check_and_flops():
    ref = torch.tensor([5.0, 4.0, 3.0])
    ok = ts.check(TINY, {"curve": ref + 0.01, "logged": [0, 2, 3]}, torch.tensor(1.0), ref)
    bad = ts.check(TINY, {"curve": ref + torch.tensor([0.0, 0.2, 0.0]), "logged": [0, 2, 3]}, torch.tensor(1.0), ref)
    nan = ts.check(TINY, {"curve": ref, "logged": [0, 2, 3]}, torch.tensor(float("nan")), ref)
    assert ok["passed"] and not bad["passed"] and "step 2" in bad["error"] and not nan["passed"]
    case = {**TINY, "layers": 4, "d_model": 1024, "seq": 2048, "batch": 8, "vocab": 256}
    tokens = 8 * 2048
    expected = 6 * tokens * (12 * 4 * 1024**2 + 1024 * 256) + 3.5 * 4 * 4 * 8 * 1024 * 2048**2 / 2
    assert ts.flops(case) == pytest.approx(expected)


def test_train_step_config_plans(tmp_path):
    from repro.results.store import artifact_path, case_key, write_artifact

    cfg = OmegaConf.load(f"{ROOT_CFG}/train_step.yaml")
    cfg.dtype = None
    (case,) = ts.cases(cfg)
    ts.validate_case(case)
    assert case["d_model"] // case["heads"] == 64
    curve = ts.artifacts(case, "sdpa", {"seed": 1, "logged": [0, 10], "curve": torch.tensor([5.5, 5.0]),
                                        "tokens_per_s": 1e5})["curves"]
    assert [r["step"] for r in curve] == [0, 10] and curve[1]["loss"] == pytest.approx(5.0)
    key = case_key(case)
    write_artifact(tmp_path, "h200", "train_step", "curves", key, "sdpa", curve)
    write_artifact(tmp_path, "h200", "train_step", "curves", key, "sdpa", [{**r, "seed": 2} for r in curve])
    write_artifact(tmp_path, "h200", "train_step", "curves", key, "tilelang", curve)  # the first sdpa run replaced
    import pandas as pd

    rows = pd.read_csv(artifact_path(tmp_path, "h200", "train_step", "curves"))
    assert len(rows) == 4 and set(rows[rows.backend == "sdpa"]["seed"]) == {2}