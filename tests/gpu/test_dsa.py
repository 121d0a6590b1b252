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


def test_topk_row_with_no_valid_entry():
    def blank_row(inputs):
        inputs["logits"][2] = float("-inf")

    out = _gate(topk_exp, "tilelang", _topk_case(4, 5000), edit=blank_row)
    assert (out[2] == -1).all()


def _mla_case(t, s, topk=2048):
    return {"t": t, "s": s, "mode": "prefill", "heads": 128, "d_qk": 576, "d_v": 512, "topk": topk, "dtype": "bf16"}


@pytest.mark.parametrize("backend", ["tilelang", "torch"])
@pytest.mark.parametrize("t,s", [(3, 100), (17, 2100), (64, 5000), (300, 9001)])
def test_sparse_mla(backend, t, s):
    _gate(mla_exp, backend, _mla_case(t, s), BF16_TOL)


def test_sparse_mla_query_without_indices():
    def blank_query(inputs):
        inputs["indices"][1] = -1
        inputs["indices"][2, 0, 1000:] = -1

    out, lse = _gate(mla_exp, "tilelang", _mla_case(4, 6000), BF16_TOL, blank_query)
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
