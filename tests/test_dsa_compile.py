"""DSA kernels (indexer, top-k, sparse MLA) on a CPU: they compile for sm_90a, the PyTorch
references match naive loops, the top-k set check judges sets, and the radix-select algorithm
of the top-k kernel, replayed in Python, picks the right set with ties."""
from __future__ import annotations

import math
import struct

import pytest
import torch

from experiments import _dsa
from experiments import dsa_indexer as indexer_exp
from experiments import dsa_topk as topk_exp
from experiments import sparse_mla as mla_exp
from kernels._compile import HOPPER, compile_kernel, ptxas_usage
from kernels import dsa_indexer, dsa_topk, sparse_mla
from repro.measure.gate import default_check, poison_outputs

TIGHT = {"rel_l2": 1e-5, "max_abs_rel": 1e-5}


@pytest.mark.parametrize("t,s", [(4096, 65536), (4, 131072)])
def test_indexer_compiles_with_fp8_wgmma(t, s):
    knobs = dsa_indexer.indexer_knobs(64, 128, t, s)
    kernel = compile_kernel(dsa_indexer.lightning_indexer, 64, 128, target=HOPPER,
                            pass_configs=dsa_indexer.PASS_CONFIGS, **knobs)
    src = kernel.get_kernel_source()
    assert "wgmma" in src and "Float8_e4m3" in src


def test_every_indexer_search_candidate_compiles():
    for choice in range(len(dsa_indexer.CANDIDATES)):
        knobs = dsa_indexer.indexer_knobs(64, 128, 4096, 16384, choice=choice)
        compile_kernel(dsa_indexer.lightning_indexer, 64, 128, target=HOPPER,
                       pass_configs=dsa_indexer.PASS_CONFIGS, **knobs)


@pytest.mark.parametrize("t,s,mode", [(4096, 65536, "single"), (4, 131072, "split"), (4, 131072, "merge")])
def test_topk_compiles(t, s, mode):
    knobs = dict(dsa_topk.topk_knobs(2048, t, s))  # a copy: the function caches its result
    splits = knobs.pop("splits")
    assert (splits > 1) == (mode != "single")
    extra = {"single": {}, "split": {"splits": splits}, "merge": {"gather": True}}[mode]
    src = compile_kernel(dsa_topk.topk_selector, 2048, **knobs, **extra, target=HOPPER,
                         pass_configs=dsa_topk.PASS_CONFIGS).get_kernel_source()
    assert "AtomicAdd" in src
    assert ("blockIdx.y" in src) == (mode == "split") and ("Pos[" in src) == (mode == "merge")
    assert ("Values[" in src) == (mode == "split")  # only the split pass writes candidate values


def test_topk_splits_only_few_long_rows():
    assert dsa_topk.topk_knobs(2048, 4096, 65536)["splits"] == 1
    assert dsa_topk.topk_knobs(2048, 1, 8192)["splits"] == 1  # too short to be worth a merge
    assert dsa_topk.topk_knobs(2048, 4, 131072)["splits"] == 8  # 16k-entry slices, 16k candidates


def test_sparse_mla_pipelined_compiles_warp_specialized():
    src = compile_kernel(sparse_mla.sparse_mla_fwd_pipelined, 128, 512, 64, 2048, 576**-0.5, target=HOPPER,
                         pass_configs=sparse_mla.PASS_CONFIGS).get_kernel_source()
    assert "wgmma" in src and "__launch_bounds__(384, 1)" in src
    assert "warpgroup_reg_alloc<240>" in src and "warpgroup_reg_dealloc<80>" in src  # consumers / producer
    assert "mbarrier_cp_async_arrive_noinc" in src  # the producer's gathers complete on an mbarrier
    assert src.count("__syncthreads()") <= 2  # none inside the role branches (only barriers there)


@pytest.mark.parametrize("heads,t,block_H,threads", [(16, 64, 16, 128), (128, 8, 32, 256)])
def test_sparse_mla_narrow_compiles_with_heads_as_wgmma_n(heads, t, block_H, threads):
    knobs = dict(sparse_mla.sparse_mla_knobs(heads, 2048, t=t))
    assert knobs.pop("kernel") == "narrow" and (knobs["block_H"], knobs["threads"]) == (block_H, threads)
    assert knobs["splits"] > 1
    src = compile_kernel(sparse_mla.sparse_mla_fwd_narrow, heads, 512, 64, 2048, 576**-0.5, target=HOPPER,
                         pass_configs=sparse_mla.PASS_CONFIGS, **knobs).get_kernel_source()
    # wgmma m64 n16 k16: 64 gathered rows x 16 heads (32 heads: 16 per warpgroup), nothing padded
    assert "64, 16, 16" in src
    combine = compile_kernel(sparse_mla.sparse_mla_combine, 16, 512, knobs["splits"], target=HOPPER)
    assert "logf" in combine.get_kernel_source() or "__logf" in combine.get_kernel_source()


@pytest.mark.parametrize("heads,t,family,block_H", [(128, 4096, "wide", None), (128, 8, "narrow", 32),
                                                    (32, 4096, "narrow", 32), (8, 100, "narrow", 8),
                                                    (24, 64, "narrow", 8)])
def test_sparse_mla_schedule_per_shape(heads, t, family, block_H):
    assert sparse_mla.schedule_family(heads, t) == family
    knobs = sparse_mla.sparse_mla_knobs(heads, 2048, t)
    assert knobs.get("block_H") == block_H
    if family == "narrow":  # enough CTAs once split, and >= 4 kv tiles per split
        assert t * heads // block_H * knobs["splits"] >= 132 or 2048 // 64 // knobs["splits"] < 8
        assert 2048 // 64 // knobs["splits"] >= 4


MLA_HEADS = (8, 16, 24, 32, 48, 64, 96, 128)  # every head count a user would run: V3.2's 128 and its TP shares
MLA_TOKENS = (1, 64, 1024, 4096)  # queries (prefill) and sequences (decode, 2 queries each)


def _mla_schedules() -> dict:
    """Every schedule `sparse_mla` picks for the experiment's prefill and decode cases at these head
    counts and token counts (each search candidate), keyed by its knobs with the top-k split counted
    as split or not (the count only sets a loop's trip count), mapped to the head counts using it."""
    from omegaconf import OmegaConf

    pairs = [[t, 65536] for t in MLA_TOKENS]
    cfg = OmegaConf.create({"heads": list(MLA_HEADS), "prefill": pairs, "decode": pairs, "decode_tokens": 2})
    found: dict = {}
    for case in mla_exp.cases(cfg):
        mla_exp.validate_case(case)
        family = sparse_mla.schedule_family(case["heads"], case["t"])
        for choice in range(len(sparse_mla.CANDIDATES[family])):
            knobs = sparse_mla.sparse_mla_knobs(case["heads"], case["topk"], case["t"], 132, choice)
            key = tuple(sorted((k, min(v, 2) if k == "splits" else v) for k, v in knobs.items()))
            entry = found.setdefault(key, {"heads": set(), "splits": 1})
            entry["heads"].add(case["heads"])
            entry["splits"] = max(entry["splits"], knobs.get("splits", 1))  # compile the most split one
    return found


def _schedule_id(key) -> str:
    knobs = dict(key)
    text = "-".join(f"{k}{'_'.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in knobs.items()
                    if k not in ("kernel", "splits", "block_I", "num_stages"))
    return f"{knobs['kernel']}-{text or 'default'}" + ("-split" if knobs.get("splits", 1) > 1 else "")


MLA_SCHEDULES = _mla_schedules()


def test_sparse_mla_every_head_count_has_a_compiled_schedule():
    """The compile test below covers every accepted head count, and each narrow CTA takes 8, 16 or
    32 heads (two warpgroups only with 32), the wgmma N values whose layouts compile."""
    covered = set().union(*(entry["heads"] for entry in MLA_SCHEDULES.values()))
    assert covered == set(MLA_HEADS)
    for key in MLA_SCHEDULES:
        knobs = dict(key)
        if knobs["kernel"] == "narrow":
            assert knobs["block_H"] in sparse_mla.NARROW_BLOCK_H
            assert knobs["threads"] == 128 or knobs["block_H"] == 32
    per_heads = {h: sparse_mla.sparse_mla_knobs(h, 2048, 1024).get("block_H") for h in MLA_HEADS}
    assert per_heads == {8: 8, 16: 16, 24: 8, 32: 32, 48: 16, 64: None, 96: 32, 128: None}  # None: wide
    # the H200 failure (t=1024, 8 heads): one 8-head CTA per query over the whole top-k list
    assert sparse_mla.sparse_mla_knobs(8, 2048, 1024) == {"kernel": "narrow", "block_I": 64, "num_stages": 2,
                                                          "threads": 128, "block_H": 8, "splits": 1}


@pytest.mark.parametrize("key", list(MLA_SCHEDULES), ids=_schedule_id)
def test_sparse_mla_schedule_compiles_for_its_head_counts(key):
    """Each distinct schedule, compiled once (for the fewest heads that use it: 8 heads is the
    case that failed in TileLang's wgmma lowering, an MN-major P one 16-byte column wide)."""
    entry, knobs = MLA_SCHEDULES[key], dict(key)
    if "splits" in knobs:
        knobs["splits"] = entry["splits"]
    kernel, combine = sparse_mla.build(min(entry["heads"]), 576, 512, 2048, 576**-0.5, knobs)
    src = kernel.get_kernel_source()
    assert "wgmma" in src
    if knobs["kernel"] == "narrow":  # m64 (gathered kv rows) x n (the heads of one warpgroup) x k16
        n = knobs["block_H"] // (knobs["threads"] // 128)
        assert f"kFloat32, 64, {n}, 16," in src
        assert (combine is not None) == (knobs["splits"] > 1)


@pytest.mark.parametrize("heads", [0, 4, 12, 20, 36, 100])
def test_sparse_mla_refuses_unsupported_head_counts(heads):
    q = torch.zeros(2, heads, 576, dtype=torch.bfloat16)
    kv, idx = torch.zeros(9, 1, 576, dtype=torch.bfloat16), torch.zeros(2, 1, 2048, dtype=torch.int32)
    with pytest.raises(ValueError) as err:
        sparse_mla.sparse_mla(q, kv, idx)
    message = str(err.value)
    assert "\n" not in message and f"heads={heads} " in message
    assert "multiple of 8" in message and "8, 16, 24, 32, 48, 64, 96, 128" in message
    case = {"t": 2, "s": 4096, "mode": "prefill", "heads": heads, "d_qk": 576, "d_v": 512, "topk": 2048}
    with pytest.raises(ValueError, match="multiple of 8 \\(8, 16, 24, 32, 48, 64, 96, 128"):
        mla_exp.validate_case(case)


def test_sparse_mla_accepts_every_supported_head_count():
    for heads in MLA_HEADS:
        sparse_mla.validate(torch.zeros(2, heads, 576, dtype=torch.bfloat16), torch.zeros(9, 1, 576, dtype=torch.bfloat16),
                            torch.zeros(2, 1, 2048, dtype=torch.int32))


def test_sparse_mla_build_refuses_untested_narrow_tiles():
    for block_H, threads in ((24, 128), (16, 256), (8, 256)):
        with pytest.raises(ValueError, match="narrow kernel"):
            sparse_mla.build(48, 576, 512, 2048, 0.1, {"kernel": "narrow", "block_H": block_H, "threads": threads})


def test_wrappers_refuse_bad_inputs():
    q = torch.zeros(2, 64, 128, dtype=torch.bfloat16)
    k = torch.zeros(8, 128, dtype=torch.float8_e4m3fn)
    ranges = torch.zeros(2, dtype=torch.int32)
    with pytest.raises(ValueError, match="q must be float8_e4m3fn"):
        dsa_indexer.dsa_indexer(q, k, torch.ones(8), torch.ones(2, 64), ranges, ranges)
    with pytest.raises(ValueError, match="exceeds 131072"):
        dsa_topk.dsa_topk(torch.zeros(1, 131073), ranges[:1], ranges[:1])
    with pytest.raises(ValueError, match="kv must be bf16"):
        sparse_mla.sparse_mla(torch.zeros(2, 128, 576, dtype=torch.bfloat16), torch.zeros(9, 576),
                              torch.zeros(2, 1, 2048, dtype=torch.int32))
    with pytest.raises(ValueError, match="multiple of 8"):
        sparse_mla.sparse_mla(torch.zeros(2, 12, 576, dtype=torch.bfloat16), torch.zeros(9, 1, 576, dtype=torch.bfloat16),
                              torch.zeros(2, 1, 2048, dtype=torch.int32))


def test_indexer_reference_matches_naive_loop():
    case = {"t": 3, "s": 11, "mode": "prefill", "heads": 2, "dim": 8, "dtype": "fp8"}
    inputs = indexer_exp.make_inputs(case, 0, "cpu")
    inputs["starts"][1] = 4  # a range that does not begin at 0
    ref = indexer_exp.reference(case, inputs)
    q, k = inputs["q"].double(), inputs["k"].double()
    for i in range(3):
        for j in range(11):
            if inputs["starts"][i] <= j < inputs["ends"][i]:
                want = sum(float(inputs["weights"][i, h]) * max(float(q[i, h] @ k[j]), 0.0) for h in range(2))
                assert math.isclose(ref[i, j], want * float(inputs["k_scale"][j]), rel_tol=1e-5, abs_tol=1e-5)
            else:
                assert ref[i, j] == float("-inf")
    assert torch.isfinite(ref).sum() > 0 and q.abs().sum() > 0


def test_indexer_torch_backend_matches_reference():
    case = {"t": 37, "s": 300, "mode": "prefill", "heads": 4, "dim": 32, "dtype": "fp8"}
    inputs = indexer_exp.make_inputs(case, 1, "cpu")
    ref = indexer_exp.reference(case, inputs)
    run = indexer_exp.build_torch(case, inputs)
    poison_outputs(inputs)
    assert default_check(run(), ref, TIGHT)["passed"]


def test_sparse_mla_reference_matches_naive_loop():
    case = {"t": 3, "s": 9, "mode": "prefill", "heads": 2, "d_qk": 8, "d_v": 4, "topk": 5, "dtype": "bf16"}
    inputs = mla_exp.make_inputs(case, 0, "cpu")
    inputs["indices"][1, 0, 2] = -1  # a skipped slot
    inputs["indices"][2, 0, :] = -1  # a query with nothing to attend to
    out, lse = mla_exp.reference(case, inputs)
    q, kv, scale = inputs["q"].double(), inputs["kv"][:, 0].double(), mla_exp.sm_scale(case)
    for i in range(2):
        picked = [int(j) for j in inputs["indices"][i, 0] if j >= 0]
        for h in range(2):
            scores = [float(q[i, h] @ kv[j]) * scale for j in picked]
            top = max(scores)
            weights = [math.exp(x - top) for x in scores]
            assert math.isclose(lse[i, h], top + math.log(sum(weights)), rel_tol=1e-5)
            want = sum(w * kv[j, :4] for w, j in zip(weights, picked)) / sum(weights)
            assert torch.allclose(out[i, h].double(), want, rtol=1e-5, atol=1e-5)
    assert (out[2] == 0).all() and (lse[2] == float("-inf")).all()


def test_sparse_mla_torch_backend_matches_reference():
    case = {"t": 5, "s": 70, "mode": "prefill", "heads": 4, "d_qk": 64, "d_v": 32, "topk": 48, "dtype": "bf16"}
    inputs = mla_exp.make_inputs(case, 2, "cpu")
    ref = mla_exp.reference(case, inputs)
    run = mla_exp.build_torch(case, inputs)
    poison_outputs(inputs)
    assert default_check(run(), ref, {"rel_l2": 1e-2, "max_abs_rel": 5e-2})["passed"]


def test_sparse_mla_decode_cases_index_their_own_sequence():
    case = {"t": 6, "s": 50, "mode": "decode", "batch": 3, "heads": 8, "d_qk": 16, "d_v": 8, "topk": 64,
            "dtype": "bf16"}
    mla_exp.validate_case(case)
    inputs = mla_exp.make_inputs(case, 0, "cpu")
    assert inputs["kv"].shape[0] == 150
    for i in range(6):
        b, visible = i // 2, 50 - 2 + i % 2 + 1
        chosen = inputs["indices"][i, 0][inputs["indices"][i, 0] >= 0]
        assert len(chosen) == visible and chosen.min() >= b * 50 and chosen.max() < b * 50 + visible
    with pytest.raises(ValueError, match="multiple of 8"):
        mla_exp.validate_case({**case, "heads": 12})


def test_sparse_mla_config_cases():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"heads": [128, 16], "prefill": [[64, 8192]], "decode": [[64, 8192]],
                            "decode_tokens": 2, "topk": 2048})
    cases = mla_exp.cases(cfg)
    assert [(c["mode"], c["heads"], c["t"], c.get("batch")) for c in cases] == [
        ("prefill", 128, 64, None), ("decode", 128, 128, 64), ("prefill", 16, 64, None), ("decode", 16, 128, 64)]


@pytest.mark.parametrize("t,s,k", [(6, 9, 4), (40, 300, 64), (3, 5000, 2048)])
def test_random_indices_are_distinct_visible_positions(t, s, k):
    idx = _dsa.random_topk_indices(t, s, k, _dsa.generator(0, "cpu"), "cpu")
    for i in range(t):
        seen = s - t + i + 1
        chosen = [int(j) for j in idx[i] if j >= 0]
        assert len(chosen) == min(k, seen) == len(set(chosen))
        assert all(0 <= j < seen for j in chosen)


def _topk_case(t, s, k=16):
    return {"t": t, "s": s, "mode": "prefill", "topk": k, "dtype": "fp32"}


def test_topk_reference_matches_sorting():
    case = _topk_case(5, 40)
    inputs = topk_exp.make_inputs(case, 0, "cpu")
    kth, count = topk_exp.reference(case, inputs)
    for i in range(5):
        finite = sorted((float(x) for x in inputs["logits"][i] if math.isfinite(x)), reverse=True)
        assert int(count[i]) == min(16, len(finite))
        assert float(kth[i]) == (finite[15] if len(finite) >= 16 else float("-inf"))


def test_topk_check_judges_sets_not_order():
    case = _topk_case(4, 18)
    inputs = topk_exp.make_inputs(case, 0, "cpu")
    inputs["logits"][3, 10:] = 1.0  # ties at the threshold of the last row
    ref = topk_exp.reference(case, inputs)
    good = topk_exp.torch_topk(inputs["logits"], 16)
    shuffled = good[:, torch.randperm(16)]
    assert topk_exp.check(case, inputs, shuffled, ref)["passed"]
    assert (shuffled[0] == -1).sum() == 1  # row 0 sees 15 positions: padding is exercised
    dup = good.clone()
    dup[3, 1] = dup[3, 0]
    low = good.clone()
    low[3, 0] = int(inputs["logits"][3].argmin())
    pad = good.clone()
    pad[3, 0] = -1
    poison = torch.full_like(good, -(2**31) + 7)
    for bad in (dup, low, pad, poison):
        assert not topk_exp.check(case, inputs, bad, ref)["passed"]


def _replay_radix_select(row, start, end, k, radix_bits):
    """The top-k kernel's algorithm in plain Python, round for round."""
    bins, shifts = 1 << radix_bits, dsa_topk._digit_shifts(radix_bits)
    keys = {}
    for j in range(max(start, 0), min(end, len(row))):
        x = float(row[j])
        if x > float("-inf"):
            bits = struct.unpack("<I", struct.pack("<f", x))[0]
            key = (~bits & 0xFFFFFFFF) if x < 0 else bits | 0x80000000
            keys[j] = (key << dsa_topk.INDEX_BITS) | ((1 << dsa_topk.INDEX_BITS) - 1 - j)
    need, prefix, cut = k, 0, 0
    for r, shift in enumerate(shifts):
        width = (dsa_topk.KEY_BITS if r == 0 else shifts[r - 1]) - shift
        hist = [0] * (bins + 1)
        for c in keys.values():
            if c >> (shift + width) == prefix:
                hist[(c >> shift) & ((1 << width) - 1)] += 1
        for b in reversed(range(bins)):
            hist[b] += hist[b + 1]
        chosen = next((b for b in range(bins) if hist[b] >= need > hist[b + 1]), 0)
        prefix, cut = (prefix << width) | chosen, shift
        done = hist[chosen] <= need
        need -= hist[chosen + 1]
        if done:
            break
    return sorted(j for j, c in keys.items() if c >> cut >= prefix)


def test_split_then_merge_selects_the_single_pass_set():
    """The split path's claim: the union of each slice's top-k holds the row's top-k, and the
    merge, keyed by the original positions, breaks ties exactly as one pass would."""
    g = torch.Generator().manual_seed(1)
    for row in (torch.randint(-2, 3, (700,), generator=g).float(), torch.randn(700, generator=g)):
        row[100:400] = float("-inf")
        for start, end, k, splits in ((0, 700, 32, 4), (13, 690, 64, 8), (650, 700, 32, 4)):
            chunk = -(-(end - start) // splits)
            merged = torch.full_like(row, float("-inf"))
            for sp in range(splits):
                lo = start + sp * chunk
                for j in _replay_radix_select(row, lo, min(end, lo + chunk), k, 11):
                    merged[j] = row[j]
            assert _replay_radix_select(merged, 0, 700, k, 11) == _replay_radix_select(row, start, end, k, 11)


@pytest.mark.parametrize("radix_bits", [8, 11])
def test_radix_select_algorithm_prefers_smaller_index_on_ties(radix_bits):
    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(300, generator=g), torch.randint(-3, 4, (300,), generator=g).float(),
            torch.full((300,), 2.5), -torch.rand(300, generator=g)]
    rows[0][50:60] = float("-inf")
    for row in rows:
        for start, end, k in ((0, 300, 16), (7, 280, 64), (100, 110, 16), (5, 5, 4)):
            valid = [j for j in range(start, end) if math.isfinite(float(row[j]))]
            want = sorted(sorted(valid, key=lambda j: (-float(row[j]), j))[:k])
            assert _replay_radix_select(row, start, end, k, radix_bits) == want


@pytest.mark.parametrize("heads", [128, 64, 32, 16])
def test_sparse_mla_backward_compiles(heads):
    """The backward (kernels/sparse_mla_bwd.py): wgmma at 64 heads per CTA, mma below; atomics for dkv."""
    from kernels import sparse_mla_bwd as bwd

    knobs = bwd.knobs(heads)
    src = compile_kernel(bwd.sparse_mla_bwd, heads, 512, 64, 2048, 576**-0.5, target=HOPPER,
                         pass_configs=bwd.PASS_CONFIGS, **knobs).get_kernel_source()
    assert "atomicAdd" in src or "AtomicAdd" in src
    assert ("wgmma" in src) == (knobs["block_H"] == 64)
    assert compile_kernel(bwd.sparse_mla_bwd_delta, heads, 512, target=HOPPER).get_kernel_source()


@pytest.mark.parametrize("heads", [128, 16])
def test_sparse_mla_backward_vector_atomics_candidate_compiles(heads):
    """vector_atomics: the block's dkv rows staged in shared memory, then 16-byte atomics (four
    floats) where the default adds two floats at a time; it spills less at 64 heads per CTA."""
    from kernels import sparse_mla_bwd as bwd

    build = {h: compile_kernel(bwd.sparse_mla_bwd, heads, 512, 64, 2048, 576**-0.5, target=HOPPER,
                               pass_configs=bwd.PASS_CONFIGS, **{**bwd.knobs(heads), "vector_atomics": h}) for h in (False, True)}
    assert "AtomicAddx4" in build[True].get_kernel_source() and "AtomicAddx4" not in build[False].get_kernel_source()
    assert "AtomicAddx2" in build[False].get_kernel_source()
    spills = {h: ptxas_usage(k)["spill_stores"] for h, k in build.items()}
    assert spills[True] <= spills[False], spills


@pytest.mark.parametrize("heads", [0, 8, 24, 100])
def test_sparse_mla_backward_refuses_head_counts_it_cannot_tile(heads):
    from kernels import sparse_mla_bwd as bwd

    with pytest.raises(ValueError, match="multiple of 16"):
        bwd.knobs(heads)


def test_sparse_mla_backward_refuses_outputs_that_do_not_match_q():
    import torch

    from kernels.sparse_mla_bwd import sparse_mla_backward

    q = torch.zeros(4, 16, 576, dtype=torch.bfloat16)
    kv = torch.zeros(10, 1, 576, dtype=torch.bfloat16)
    idx = torch.zeros(4, 1, 32, dtype=torch.int32)
    out, lse = torch.zeros(4, 16, 512, dtype=torch.bfloat16), torch.zeros(4, 16)
    with pytest.raises(ValueError, match="do not match"):
        sparse_mla_backward(q, kv, idx, out, lse, torch.zeros(4, 8, 512, dtype=torch.bfloat16))
