"""On a GPU: the DSA kernels (indexer, top-k, sparse MLA) pass the gate on odd shapes, lengths
that are not a multiple of any block, and queries with fewer than 2048 valid positions."""
from __future__ import annotations

import pytest
import torch

from experiments import _dsa
from experiments.dsa_indexer import EXPERIMENT as indexer_exp
from experiments.dsa_topk import EXPERIMENT as topk_exp
from experiments.sparse_mla import EXPERIMENT as mla_exp
from repro.measure.gate import default_check, poison_outputs

pytestmark = pytest.mark.gpu
INDEXER_TOL = {"rel_l2": 1e-3, "max_abs_rel": 1e-3}
BF16_TOL = {"rel_l2": 1e-2, "max_abs_rel": 5e-2}


def _gate(exp, backend, case, tol=None, edit=None, seed=3):
    inputs = exp.make_inputs(case, seed, "cuda")
    if edit:
        edit(inputs)
    ref = exp.reference(case, inputs)
    run = exp.backend(backend).build(case, inputs)
    poison_outputs(inputs)
    out = run()
    torch.cuda.synchronize()
    res = exp.check(case, inputs, out, ref) if exp.check else default_check(out, ref, tol)
    assert res["passed"], res["error"]
    return out


def _indexer_case(t, s):
    return {"t": t, "s": s, "mode": "prefill", "heads": 64, "dim": 128, "dtype": "fp8"}


@pytest.mark.parametrize("backend", ["tilelang", "torch"])
@pytest.mark.parametrize("t,s", [(3, 1000), (37, 4099), (257, 300), (1, 8191), (4, 40000), (1000, 70001)])
def test_indexer(backend, t, s):
    _gate(indexer_exp, backend, _indexer_case(t, s), INDEXER_TOL)


def test_indexer_ranges_not_starting_at_zero():
    def shift_starts(inputs):  # a sliding window, and one query whose range is empty
        inputs["starts"].copy_((inputs["ends"] - 777).clamp_min(0))
        inputs["starts"][5] = inputs["ends"][5]

    _gate(indexer_exp, "tilelang", _indexer_case(130, 3000), INDEXER_TOL, shift_starts)


@pytest.mark.parametrize("choice", range(6))
def test_every_indexer_schedule(choice):
    """Each schedule the search may pick passes the gate on a ragged shape (its own tiles)."""
    from kernels.dsa_indexer import CANDIDATES, dsa_indexer

    assert len(CANDIDATES) == 6
    case = _indexer_case(257, 9001)
    inputs = indexer_exp.make_inputs(case, 4, "cuda")
    ref = indexer_exp.reference(case, inputs)
    args = [inputs[k] for k in ("q", "k", "k_scale", "weights", "starts", "ends")]
    poison_outputs(inputs)
    res = default_check(dsa_indexer(*args, out=inputs["out"], choice=choice), ref, INDEXER_TOL)
    assert res["passed"], res["error"]


def test_indexer_kv_split_matches_single_pass():
    from kernels.dsa_indexer import dsa_indexer

    inputs = indexer_exp.make_inputs(_indexer_case(4, 20000), 5, "cuda")
    args = [inputs[k] for k in ("q", "k", "k_scale", "weights", "starts", "ends")]
    assert torch.equal(dsa_indexer(*args, kv_splits=1), dsa_indexer(*args, kv_splits=16))


def _topk_case(t, s):
    return {"t": t, "s": s, "mode": "prefill", "topk": 2048, "dtype": "fp32"}


@pytest.mark.parametrize("backend", ["tilelang", "torch"])
@pytest.mark.parametrize("t,s", [(5, 1000), (40, 2100), (33, 70001), (3, 131072), (300, 4097)])
def test_topk(backend, t, s):
    _gate(topk_exp, backend, _topk_case(t, s))


@pytest.mark.parametrize("values", ["few_levels", "constant", "negative"])
def test_topk_ties_are_resolved_consistently(values):
    case = _topk_case(20, 9000)

    def make_ties(inputs):
        x = inputs["logits"]
        finite = torch.isfinite(x)
        fill = {"few_levels": x.round().clamp(-2, 2), "constant": torch.ones_like(x), "negative": -x.abs() - 1}
        x.copy_(torch.where(finite, fill[values], x))

    first = _gate(topk_exp, "tilelang", case, edit=make_ties, seed=7)
    second = _gate(topk_exp, "tilelang", case, edit=make_ties, seed=7)
    assert torch.equal(first.sort(dim=1).values, second.sort(dim=1).values)


def _rows_with_ties_and_holes(t, s, seed):
    """Logits on a few levels (many ties), -inf holes inside the ranges, ranges not starting at 0,
    and rows with fewer than 2048 finite entries."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randint(-3, 4, (t, s), generator=g, device="cuda").float()
    x[torch.rand(t, s, generator=g, device="cuda") < 0.3] = float("-inf")
    x[1, :] = float("-inf")
    x[1, 5:1500] = 1.0  # fewer than 2048 finite entries, all tied
    starts = torch.randint(0, s // 4, (t,), generator=g, device="cuda").int()
    ends = (s - torch.randint(0, 777, (t,), generator=g, device="cuda")).int()
    starts[1] = 0
    return x, starts, ends


@pytest.mark.parametrize("t,s", [(4, 131072), (2, 65537), (3, 40000)])
def test_topk_split_rows_select_the_single_pass_set(t, s):
    """Several CTAs per row, then a merge: ties are broken by position in both passes, so the set
    equals the one-CTA set exactly; it also passes the gate's set check."""
    from kernels.dsa_topk import dsa_topk

    x, starts, ends = _rows_with_ties_and_holes(t, s, seed=t)
    split = dsa_topk(x, starts, ends, 2048, splits=8)
    single = dsa_topk(x, starts, ends, 2048, splits=1)
    assert torch.equal(split.sort(dim=1).values, single.sort(dim=1).values)
    assert (split[1] >= 0).sum() == 1495  # the short row: every finite entry, then -1 padding
    case = _topk_case(t, s)
    inputs = {"logits": torch.where(_dsa.range_mask(starts, ends, 0, s), x, float("-inf")), "starts": starts,
              "ends": ends}
    res = topk_exp.check(case, inputs, split, topk_exp.reference(case, inputs))
    assert res["passed"], res["error"]


def test_topk_row_with_no_valid_entry():
    def blank_row(inputs):
        inputs["logits"][2] = float("-inf")

    out = _gate(topk_exp, "tilelang", _topk_case(4, 5000), edit=blank_row)
    assert (out[2] == -1).all()


def _mla_case(t, s, topk=2048, heads=128, **extra):
    return {"t": t, "s": s, "mode": "prefill", "heads": heads, "d_qk": 576, "d_v": 512, "topk": topk,
            "dtype": "bf16", **extra}


@pytest.mark.parametrize("backend", ["tilelang", "torch"])
@pytest.mark.parametrize("heads", [128, 32, 16, 8])
@pytest.mark.parametrize("t,s", [(3, 100), (17, 2100), (64, 5000), (300, 9001)])
def test_sparse_mla(backend, heads, t, s):
    """The default schedule per shape (queries that see fewer than 2048 positions, lengths that
    are no multiple of any block, 128 heads and the 32/16/8 of tensor parallelism)."""
    _gate(mla_exp, backend, _mla_case(t, s, heads=heads), BF16_TOL)


MLA_HEADS = [8, 16, 24, 32, 48, 64, 96, 128]  # every head count a user would run


@pytest.mark.parametrize("heads", MLA_HEADS)
@pytest.mark.parametrize("t,s", [(1024, 65536), (64, 8192), (150, 4099)])
def test_sparse_mla_every_head_count(heads, t, s):
    """The default schedule of each head count passes the experiment's gate: t=1024, s=65536 is the
    H200 case whose 8-head kernel failed to compile (8, 24: 8-head CTAs); 64 queries split the top-k
    list; 150 queries, the first 95 seeing fewer than 2048 positions, over a ragged kv length."""
    _gate(mla_exp, "tilelang", _mla_case(t, s, heads=heads), BF16_TOL)


def _schedules():
    from kernels.sparse_mla import CANDIDATES

    wide = [(128, "wide", c, {}) for c in range(len(CANDIDATES["wide"]))]
    narrow = [(h, "narrow", c, {}) for h in (128, 32, 16, 8) for c in range(len(CANDIDATES["narrow"]))]
    return wide + narrow + [(16, "narrow", 0, {"splits": 1}), (8, "narrow", 0, {"splits": 8}),
                            (128, "narrow", 0, {"splits": 4}), (32, "narrow", 1, {"block_H": 16})]


@pytest.mark.parametrize("heads,family,choice,knobs", _schedules())
def test_sparse_mla_every_schedule(heads, family, choice, knobs):
    """Each schedule a search may pick (and forced top-k splits) passes the gate on its own."""
    from kernels.sparse_mla import sparse_mla

    case = _mla_case(150, 4099, heads=heads)  # the first 95 queries see fewer than 2048 positions
    inputs = mla_exp.make_inputs(case, 11, "cuda")
    ref = mla_exp.reference(case, inputs)
    poison_outputs(inputs)
    out = sparse_mla(inputs["q"], inputs["kv"], inputs["indices"], mla_exp.sm_scale(case), 512,
                     out=inputs["out"], lse=inputs["out_lse"], choice=choice, family=family, **knobs)
    torch.cuda.synchronize()
    res = default_check(out, ref, BF16_TOL)
    assert res["passed"], res["error"]


@pytest.mark.parametrize("heads", [128, 16, 8])
@pytest.mark.parametrize("batch,s", [(8, 3001), (4, 131072)])
def test_sparse_mla_decode_batch(heads, batch, s):
    """Decode: two new queries in each of `batch` sequences, each indexing its own kv."""
    _gate(mla_exp, "tilelang", _mla_case(2 * batch, s, heads=heads, mode="decode", batch=batch), BF16_TOL)


@pytest.mark.parametrize("heads,t", [(128, 4), (128, 300), (16, 4), (16, 300), (8, 4), (8, 300)])
def test_sparse_mla_query_without_indices(heads, t):
    def blank_query(inputs):
        inputs["indices"][1] = -1
        inputs["indices"][2, 0, 1000:] = -1

    out, lse = _gate(mla_exp, "tilelang", _mla_case(t, 6000, heads=heads), BF16_TOL, blank_query)
    assert (out[1] == 0).all() and torch.isinf(lse[1]).all()


@pytest.mark.parametrize("exp,backend,case", [
    (indexer_exp, "deepgemm", _indexer_case(1000, 8192)),
    (mla_exp, "flash_mla", _mla_case(256, 8192)),
])
def test_vendor_backends_when_installed(exp, backend, case):
    reason = exp.backend(backend).probe()
    if reason:
        pytest.skip(reason)
    _gate(exp, backend, case, INDEXER_TOL if exp is indexer_exp else BF16_TOL)


def test_random_indices_on_device():
    idx = _dsa.random_topk_indices(64, 9000, 2048, _dsa.generator(0, "cuda"), "cuda")
    ordered = idx.sort(dim=1).values
    assert not ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any()


def _sparse_mla_grads_reference(q, kv, idx, d_out, scale, d_v):
    """dq, dkv by autograd through the backward experiment's fp32 forward (written for autograd:
    no in-place op; invalid indices: none selected)."""
    from experiments.sparse_mla_bwd import _attend

    qf, kvf = q.float().requires_grad_(), kv.float().requires_grad_()
    safe = torch.where((idx >= 0) & (idx < kv.shape[0]), idx, torch.full_like(idx, -1))
    with _dsa.exact_fp32():
        out = _attend(qf, kvf, safe[:, 0], scale, d_v, torch.float32)
        out.backward(d_out.float())
    return qf.grad, kvf.grad


@pytest.mark.parametrize("heads", [128, 64, 32, 16])
@pytest.mark.parametrize("t,s,topk", [(3, 100, 2048), (64, 5000, 2048), (37, 300, 256)])
@pytest.mark.parametrize("vector_atomics", [False, True])
def test_sparse_mla_backward_matches_autograd_of_the_reference(heads, t, s, topk, vector_atomics, monkeypatch):
    """dq and dkv of kernels/sparse_mla_bwd.py (through kernels.autograd.sparse_mla) against autograd
    of the fp32 reference: queries that see fewer than topk positions (-1 past them), indices past
    the kv length, and positions chosen by many queries (dkv accumulates over them); the default
    and the vector-atomics candidate."""
    from kernels import sparse_mla_bwd as bwd
    from kernels.autograd import sparse_mla

    knobs = bwd.knobs
    monkeypatch.setattr(bwd, "knobs", lambda h: {**knobs(h), "vector_atomics": vector_atomics})

    gen = torch.Generator(device="cuda").manual_seed(11)
    q = torch.randn(t, heads, 576, device="cuda", generator=gen).bfloat16()
    kv = torch.randn(s, 1, 576, device="cuda", generator=gen).bfloat16()
    idx = torch.randint(0, min(s, 64), (t, 1, topk), device="cuda", generator=gen, dtype=torch.int32)
    idx[:, :, topk // 2:] = torch.randint(0, s, (t, 1, topk - topk // 2), device="cuda", generator=gen, dtype=torch.int32)
    idx[0, 0, 5:] = -1  # a query that sees five positions
    idx[-1, 0, 7] = s + 3  # past the kv length: no position
    d_out = torch.randn(t, heads, 512, device="cuda", generator=gen).bfloat16()
    scale = 576 ** -0.5
    qg, kvg = q.clone().requires_grad_(), kv.clone().requires_grad_()
    out, _ = sparse_mla(qg, kvg, idx, scale)
    out.backward(d_out)
    torch.cuda.synchronize()
    ref_dq, ref_dkv = _sparse_mla_grads_reference(q, kv, idx, d_out, scale, 512)
    for name, got, ref in (("dq", qg.grad, ref_dq), ("dkv", kvg.grad, ref_dkv)):
        res = default_check(got, ref, {"rel_l2": 1e-2, "max_abs_rel": 5e-2})
        assert res["passed"], f"{name}: {res['error']}"
    assert torch.count_nonzero(kvg.grad[64:min(s, 128)].float()) > 0 or s <= 64  # rows of the second half too


def _bwd_tolerance() -> dict:
    """configs/experiment/sparse_mla_bwd.yaml's bf16 gate."""
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[2] / "configs" / "experiment" / "sparse_mla_bwd.yaml"
    return yaml.safe_load(path.read_text())["tolerance"]["bf16"]


@pytest.mark.parametrize("backend,heads,t,s", [(b, *shape) for b in ("tilelang", "torch")
                                               for shape in ((128, 64, 4096), (16, 300, 9001), (32, 17, 2100))]
                         + [("tilelang_upstream", 128, 2048, 2048), ("tilelang_upstream", 16, 300, 300)])
def test_sparse_mla_backward_experiment_passes_its_gate(backend, heads, t, s):
    """experiments/sparse_mla_bwd.py end to end: each backend's (dq, dkv) against the fp32
    autograd reference, with the experiment's own tolerance (TileLang's published backward on
    the training shape t == s it takes, the first queries padded)."""
    from experiments.sparse_mla_bwd import EXPERIMENT as bwd_exp
    from experiments.sparse_mla_bwd import upstream_supports

    case = _mla_case(t, s, heads=heads)
    bwd_exp.validate_case(case)
    assert backend != "tilelang_upstream" or upstream_supports(case) is None
    _gate(bwd_exp, backend, case, _bwd_tolerance())
