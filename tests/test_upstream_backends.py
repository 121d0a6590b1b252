"""CPU: the `tilelang_upstream` backends against TileLang's real example files, from the source
archive that `make baselines` takes offline (third_party/tilelang-*.tar.gz; skipped without it).

What the wrappers rely on is checked in the example sources (function names and parameters,
outputs, the LSE the sparse example never writes); each example imports where its own imports
are installed; each backend's `supports` answers on the configured sweeps and on cases outside
the example; the gate's `NotReturned`; and the MLA decode and sparse MLA wrappers' layout
adaptation, run on the CPU against a stand-in that computes what the example computes.
"""
from __future__ import annotations

import ast
import importlib.util
import math
import re
import tarfile
from pathlib import Path

import pytest

from experiments import upstream
from repro.baselines.cache import write_stamp
from repro.measure.experiment import load_experiment
from repro.measure.gate import NotReturned, default_check
from repro.run.plan import plan
from tests.helpers import compose_config

ROOT = Path(__file__).resolve().parent.parent
ARCHIVES = sorted((ROOT / "third_party").glob("tilelang-*.tar.gz"))
FOLDERS = ("examples/deepseek_mla/", "examples/deepseek_v32/", "examples/flash_attention/")
# example -> function -> the leading parameters the wrappers pass (in order)
CALLED = {
    upstream.MLA_DECODE: {"flashattn": ["batch", "heads", "kv_head_num", "seqlen_kv", "dim", "pe_dim", "block_N",
                                        "block_H", "num_split", "softmax_scale"]},
    upstream.SPARSE_MLA: {"sparse_mla_fwd_interface": ["q", "kv", "indices", "q_start_index_s", "kv_stride",
                                                       "sm_scale", "is_casual", "return_kernel"],
                          "sparse_mla_fwd": ["Q", "KV", "Indices", "q_start_index_s"]},
    upstream.INDEXER: {"mqa_attn_return_logits": ["IndexQ", "IndexK", "IndexKScale", "Weights", "CuSeqLenKS",
                                                  "CuSeqLenKE"],
                       "clean_logits_": ["Logits", "CuSeqLenKS", "CuSeqLenKE"]},
    upstream.TOPK: {"tl_topk_impl": ["input", "index", "starts", "ends"]},
    upstream.FLASH_ATTENTION: {"flashattn": ["batch", "heads", "seq_len", "dim", "is_causal"]},
    upstream.FLASH_ATTENTION_GQA: {"flashattn": ["batch", "heads", "seq_len", "dim", "is_causal", "groups"]},
}
EXPERIMENTS = {"mla_decode": upstream.MLA_DECODE, "sparse_mla": upstream.SPARSE_MLA,
               "dsa_indexer": upstream.INDEXER, "dsa_topk": upstream.TOPK,
               "flash_attention": upstream.FLASH_ATTENTION}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The archive's example folders, extracted once."""
    if not ARCHIVES:
        pytest.skip("no TileLang source archive in third_party/ (docs/baselines.md: offline sources)")
    dest = tmp_path_factory.mktemp("tilelang")
    with tarfile.open(ARCHIVES[-1]) as tar:
        members = [m for m in tar.getmembers() if any(f in m.name for f in FOLDERS)]
        tar.extractall(dest, members=members, filter="data")
    (top,) = [p for p in dest.iterdir() if (p / "examples").is_dir()]
    return top


@pytest.fixture
def cache(tree, tmp_path, monkeypatch):
    """A baselines cache whose `tilelang_upstream` record points at the extracted tree."""
    root = tmp_path / "baselines"
    write_stamp(root / upstream.NAME, {"name": upstream.NAME, "status": "ok", "tree": str(tree)})
    monkeypatch.setenv("REPRO_BASELINES", str(root))
    return root


def _functions(file: Path) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in ast.parse(file.read_text()).body if isinstance(n, ast.FunctionDef)}


def _third_party_imports(file: Path) -> set[str]:
    names = set()
    for node in ast.parse(file.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if not (file.parent / f"{n}.py").is_file()}  # not its neighbours


@pytest.mark.parametrize("path", sorted(CALLED))
def test_example_defines_what_the_wrapper_calls(tree, path):
    found = _functions(tree / path)
    for name, params in CALLED[path].items():
        assert name in found, f"{path} has no {name}()"
        args = [a.arg for a in found[name].args.args]
        assert args[:len(params)] == params, f"{path}: {name}{tuple(args)}"


def test_example_outputs_the_wrappers_rely_on(tree):
    mla = _functions(tree / upstream.MLA_DECODE)["flashattn"]
    jit = next(d for d in mla.decorator_list if isinstance(d, ast.Call) and ast.unparse(d.func) == "tilelang.jit")
    out_idx = next(k.value for k in jit.keywords if k.arg == "out_idx")
    assert ast.literal_eval(out_idx) == [4]  # the kernel returns Output (after Q, Q_pe, KV, K_pe)
    assert "float16" in ast.unparse(mla) and "bfloat16" not in ast.unparse(mla)  # fp16 only
    sparse = (tree / upstream.SPARSE_MLA).read_text()
    assert "Lse = T.empty" in sparse and "Lse[" not in sparse  # allocated, never written: NotReturned
    assert "indices_local <= max_kv_i" in sparse  # validity = position bound only (-1 would pass)


@pytest.mark.parametrize("path", sorted(CALLED))
def test_example_imports(cache, path, tree):
    missing = sorted(n for n in _third_party_imports(tree / path) if importlib.util.find_spec(n) is None)
    if missing:
        pytest.skip(f"{path} imports {', '.join(missing)}, not installed here")
    module = upstream.example(path)
    assert all(callable(getattr(module, name)) for name in CALLED[path])
    assert upstream.import_problem(path) is None


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_probe_names_the_missing_cache_or_dependency(name, cache, tree, tmp_path, monkeypatch):
    monkeypatch.setattr(upstream, "needs_cuda", lambda: None)  # as on a GPU machine
    probe = load_experiment(name).backend(upstream.NAME).probe
    needs = sorted(n for n in _third_party_imports(tree / EXPERIMENTS[name]) if importlib.util.find_spec(n) is None)
    reason = probe()
    if needs:  # e.g. einops for the MLA example on a machine without it: skipped, saying so
        assert reason and needs[0] in reason and "import failed" in reason
    else:
        assert reason is None
    monkeypatch.setenv("REPRO_BASELINES", str(tmp_path / "empty"))
    assert "make baselines" in probe()


def _upstream_answers(name: str, *overrides: str) -> dict:
    """Per configured case of the experiment: the upstream backend's refusal, or None."""
    exp, _, cases = plan(compose_config(f"experiment={name}", *overrides))
    backend = exp.backend(upstream.NAME)
    return {str(sorted(c.items())): backend.refuses(c) for c in cases}


def test_mla_decode_supports_the_readme_grid_only():
    answers = _upstream_answers("mla_decode")
    fp16 = [a for k, a in answers.items() if "'fp16'" in k]
    assert fp16 and all(a is None for a in fp16)  # TileLang's README grid: fp16, s_q 1, equal
    assert all("implements dtype fp16" in a for k, a in answers.items() if "'bf16'" in k)
    backend = load_experiment("mla_decode").backend(upstream.NAME)
    base = {"grid": "t", "batch": 4, "h_q": 128, "s_q": 1, "seqlen": 1024, "lengths": "equal", "dtype": "fp16"}
    assert backend.refuses(base) is None
    assert "s_q 1" in backend.refuses({**base, "s_q": 2})
    assert "lengths=equal" in backend.refuses({**base, "lengths": "varied"})
    assert "lengths=equal" in backend.refuses({**base, "lengths": "one_long"})
    assert "multiple of 64" in backend.refuses({**base, "seqlen": 1000})


def test_dsa_backends_support_the_configured_sweeps():
    for name in ("sparse_mla", "dsa_indexer", "dsa_topk"):
        answers = _upstream_answers(name)
        assert answers and all(a is None for a in answers.values()), (name, answers)


def test_dsa_cases_outside_the_examples_are_refused():
    sparse = load_experiment("sparse_mla").backend(upstream.NAME)
    case = {"t": 4096, "s": 8192, "mode": "prefill", "heads": 128, "d_qk": 576, "d_v": 512, "topk": 2048,
            "dtype": "bf16"}
    assert sparse.refuses(case) is None
    assert "padded index" in sparse.refuses({**case, "s": 5000})  # the first query sees 905
    assert "padded index" in sparse.refuses({**case, "s": 4097})  # s - t = 1: also its assert
    assert "multiple of 128" in sparse.refuses({**case, "topk": 1000})
    topk = load_experiment("dsa_topk").backend(upstream.NAME)
    case = {"t": 4096, "s": 8192, "mode": "prefill", "topk": 2048, "dtype": "fp32"}
    assert topk.refuses(case) is None and topk.refuses({**case, "t": 1, "s": 2048}) is None
    assert "unwritten" in topk.refuses({**case, "s": 6000})
    indexer = load_experiment("dsa_indexer").backend(upstream.NAME)
    case = {"t": 1, "s": 8192, "mode": "decode", "heads": 64, "dim": 128, "dtype": "fp8"}
    assert indexer.refuses(case) is None and "dividing 128" in indexer.refuses({**case, "heads": 48})


def test_not_returned_output_is_named_and_the_rest_still_compared():
    import torch

    tol = {"rel_l2": 1e-3, "max_abs_rel": 1e-3}
    ref = (torch.ones(4, 3), torch.zeros(4))
    res = default_check((torch.ones(4, 3), NotReturned("lse: not computed")), ref, tol)
    assert res["passed"] and res["note"] == "output 1 not compared: lse: not computed"
    res = default_check((torch.ones(4, 3) * 1.1, NotReturned("lse")), ref, tol)
    assert not res["passed"] and "output 0" in res["error"]
    assert not default_check((NotReturned("a"), NotReturned("b")), ref, tol)["passed"]
    with pytest.raises(AttributeError):  # a forgotten return is never taken for "not computed"
        default_check((torch.ones(4, 3), None), ref, tol)
    assert default_check(ref, ref, tol)["note"] == ""


# --- the wrappers' layout adaptation, on the CPU, with stand-ins for the example kernels ------

class _Module:
    def __init__(self, **functions):
        self.__dict__.update(functions)


def _mla_stand_in(calls):
    """example_mla_decode.flashattn's contract: q [b, h, 512] + q_pe [b, h, 64] against one
    contiguous kv [b, s, 1, 512] + k_pe [b, s, 1, 64], output [b, h, 512] fp16."""
    import torch

    def flashattn(batch, heads, kv_heads, seqlen_kv, dim, pe_dim, block_N, block_H, num_split, scale):
        calls.append((batch, heads, kv_heads, seqlen_kv, dim, pe_dim, block_N, block_H, num_split, scale))

        def kernel(q, q_pe, kv, k_pe):
            assert q.shape == (batch, heads, dim) and q_pe.shape == (batch, heads, pe_dim)
            assert kv.shape == (batch, seqlen_kv, 1, dim) and k_pe.shape == (batch, seqlen_kv, 1, pe_dim)
            assert all(x.is_contiguous() and x.dtype == torch.float16 for x in (q, q_pe, kv, k_pe))
            scores = (q.float() @ kv[:, :, 0].float().transpose(1, 2) +
                      q_pe.float() @ k_pe[:, :, 0].float().transpose(1, 2)) * scale
            return (torch.softmax(scores, dim=-1) @ kv[:, :, 0].float()).half()

        return kernel

    return flashattn


def test_mla_decode_wrapper_gathers_pages_into_the_examples_layout(monkeypatch):
    exp = load_experiment("mla_decode")
    calls = []
    monkeypatch.setattr(upstream, "example", lambda path: _Module(flashattn=_mla_stand_in(calls)))
    case = {"grid": "t", "batch": 3, "h_q": 16, "s_q": 1, "seqlen": 192, "lengths": "equal", "dtype": "fp16"}
    inputs = exp.make_inputs(case, 5, "cpu")  # pages shuffled, spare pages NaN
    out = exp.backend(upstream.NAME).build(case, inputs)()
    assert calls == [(3, 16, 1, 192, 512, 64, 64, 16, 1, 576 ** -0.5)]
    res = default_check(out, exp.reference(case, inputs), {"rel_l2": 2e-3, "max_abs_rel": 1e-2})
    assert res["passed"], res["error"]
    assert res["note"].startswith("output 1 not compared: lse")


def _sparse_stand_in(seen):
    """sparse_mla_fwd_interface's contract: [1, t, h, 576] q, [1, s, 1, 576] kv, [1, t, 1, k]
    indices, query i at q_start + i, an index valid when <= its position; returns a kernel."""
    import torch

    def interface(q, kv, indices, q_start_index_s, kv_stride, sm_scale=None, is_casual=True, return_kernel=False):
        assert return_kernel and kv_stride == 1 and (q_start_index_s == 0 or q_start_index_s > kv_stride)
        seen.append(q_start_index_s)

        def kernel(q, kv, indices, start):
            assert q.dim() == kv.dim() == indices.dim() == 4 and q.shape[0] == kv.shape[0] == indices.shape[0] == 1
            assert bool((indices >= 0).all()), "a -1 index would be read as a row"
            idx = indices[0, :, 0].long()
            pos = int(start[0]) + torch.arange(idx.shape[0])[:, None]
            rows = kv[0, idx.clamp_max(kv.shape[1] - 1), 0].float()  # [t, k, 576]
            scores = torch.bmm(q[0].float(), rows.transpose(1, 2)) * sm_scale
            scores.masked_fill_(~(idx <= pos)[:, None, :], float("-inf"))
            out = torch.bmm(torch.softmax(scores, dim=-1), rows[..., :512]).bfloat16()
            return out[None], torch.full(out.shape[:2], float("nan"))[None]

        return kernel

    return interface


def test_sparse_mla_wrapper_passes_the_examples_layout(monkeypatch):
    exp = load_experiment("sparse_mla")
    seen = []
    monkeypatch.setattr(upstream, "example", lambda path: _Module(sparse_mla_fwd_interface=_sparse_stand_in(seen)))
    monkeypatch.setattr(upstream, "_COMPILED", {})
    case = {"t": 6, "s": 200, "mode": "prefill", "heads": 8, "d_qk": 576, "d_v": 512, "topk": 128, "dtype": "bf16"}
    assert exp.backend(upstream.NAME).refuses(case) is None
    inputs = exp.make_inputs(case, 2, "cpu")
    out = exp.backend(upstream.NAME).build(case, inputs)()
    assert seen == [194]
    res = default_check(out, exp.reference(case, inputs), {"rel_l2": 1e-2, "max_abs_rel": 5e-2})
    assert res["passed"], res["error"]
    assert "output 1 not compared: lse" in res["note"] and not math.isnan(res["rel_l2"])


# --- flash_attention: tilelang_upstream (the two forward examples) and fa4 ------------------

def _schedule_call(fn: ast.FunctionDef) -> dict:
    """The keywords of the example's main()'s first `flashattn(...)` call (its non-tuning run)."""
    call = next(n for n in ast.walk(fn) if isinstance(n, ast.Call) and ast.unparse(n.func) == "flashattn"
                and n.keywords)
    return {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg != "groups"}


@pytest.mark.parametrize("path", [upstream.FLASH_ATTENTION, upstream.FLASH_ATTENTION_GQA])
def test_flash_attention_examples_are_what_the_wrapper_assumes(tree, path):
    from experiments.flash_attention import UPSTREAM_SCHEDULES

    found = _functions(tree / path)
    kernel, text = found["flashattn"], ast.unparse(found["flashattn"])
    assert _schedule_call(found["main"]) == UPSTREAM_SCHEDULES[path]  # main()'s schedule, as published
    assert set(UPSTREAM_SCHEDULES[path]) <= {a.arg for a in kernel.args.args}
    jit = next(d for d in kernel.decorator_list if isinstance(d, ast.Call) and ast.unparse(d.func) == "tilelang.jit")
    assert ast.literal_eval(next(k.value for k in jit.keywords if k.arg == "out_idx")) == [3]  # returns Output
    assert "float16" in text and "bfloat16" not in text  # fp16 only: Backend(dtypes=("fp16",))
    assert "(1.0 / dim) ** 0.5" in text  # softmax scale 1/sqrt(d), the reference's
    # BSHD, one seq_len for q and k/v, V shaped as K (q's head dim): what `upstream_supports` keeps
    assert re.search(r"\[batch, seq_len, heads, dim\]", text)
    assert "V: T.Tensor(kv_shape" in text or "V: T.Tensor(shape" in text
    # causal: query row bx * block_M + i sees key k * block_N + j up to its own index (top-left,
    # the same as our bottom-right alignment when s_q == s_k)
    assert "bx * block_M + i >= k * block_N + j" in text


def test_flash_attention_upstream_supports_the_configured_sweep():
    exp, _, cases = plan(compose_config("experiment=flash_attention"))
    backend = exp.backend(upstream.NAME)
    seen = set()
    for case in cases:
        why = backend.refuses(case)
        if case["dtype"] != "fp16":
            kind, ok = "dtype", "implements dtype fp16" in why
        elif "lengths" in case:
            kind, ok = "varlen", "packed variable lengths" in why
        elif case["head_dim"] == 192:
            kind, ok = "192/128", "V has q's head dim" in why
        else:  # the FA3 grid (64, 128, 256), GQA 32:8 and 64:8, the 32k case
            kind, ok = ("gqa" if case["heads_kv"] != case["heads"] else f"d{case['head_dim']}"), why is None
        assert ok, (case, why)
        seen.add(kind)
    assert seen == {"dtype", "varlen", "192/128", "gqa", "d64", "d128", "d256"}
    case = {"batch": 2, "heads": 8, "heads_kv": 8, "seq_q": 512, "seq_k": 1024, "head_dim": 128, "causal": True,
            "dtype": "fp16"}
    assert "one seq_len" in backend.refuses(case)


def _fa_stand_in(calls):
    """example_*_fwd_bshd.flashattn's contract: fp16 BSHD q [b, s, h, d], k/v [b, s, h / groups, d];
    returns a kernel that allocates and returns the output."""
    import torch

    from experiments.flash_attention import attention_reference

    def flashattn(batch, heads, seq_len, dim, is_causal, groups=1, **schedule):
        calls.append((batch, heads, seq_len, dim, is_causal, groups, schedule))

        def kernel(q, k, v):
            assert q.shape == (batch, seq_len, heads, dim)
            assert k.shape == v.shape == (batch, seq_len, heads // groups, dim)
            assert all(x.dtype == torch.float16 and x.is_contiguous() for x in (q, k, v))
            return attention_reference(q, k, v, is_causal).half()

        return kernel

    return flashattn


def test_flash_attention_upstream_wrapper_picks_the_example_and_schedule(monkeypatch):
    from experiments.flash_attention import UPSTREAM_SCHEDULES

    exp = load_experiment("flash_attention")
    calls, paths = [], []
    monkeypatch.setattr(upstream, "example", lambda path: paths.append(path) or _Module(flashattn=_fa_stand_in(calls)))
    base = {"batch": 2, "heads": 4, "heads_kv": 4, "seq_q": 96, "seq_k": 96, "head_dim": 64, "causal": True,
            "dtype": "fp16"}
    for case in (base, {**base, "heads": 8, "heads_kv": 2, "causal": False}):
        inputs = exp.make_inputs(case, 3, "cpu")
        res = default_check(exp.backend(upstream.NAME).build(case, inputs)(), exp.reference(case, inputs),
                            {"rel_l2": 2e-3, "max_abs_rel": 1e-2})
        assert res["passed"], res["error"]
    assert paths == [upstream.FLASH_ATTENTION, upstream.FLASH_ATTENTION_GQA]
    assert calls == [(2, 4, 96, 64, True, 1, UPSTREAM_SCHEDULES[upstream.FLASH_ATTENTION]),
                     (2, 8, 96, 64, False, 4, UPSTREAM_SCHEDULES[upstream.FLASH_ATTENTION_GQA])]


# A stand-in for flash-attn-4's `flash_attn.cute` with its interface's leading parameters (4.0.0b36:
# q, k, v, qv, ... ; the varlen entry's lengths after qv), computing the reference.
FAKE_FA4 = """
import torch
from experiments.flash_attention import attention_reference
CALLS = []
def flash_attn_func(q, k, v, qv=None, gather_kv_indices=None, softmax_scale=None, causal=False, **kw):
    assert qv is None and gather_kv_indices is None and softmax_scale is None and not kw
    CALLS.append("padded")
    return attention_reference(q, k, v, causal).to(q.dtype), None
def flash_attn_varlen_func(q, k, v, qv=None, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None,
                           max_seqlen_k=None, causal=False, **kw):
    assert qv is None and cu_seqlens_q is cu_seqlens_k is not None and max_seqlen_q == max_seqlen_k and not kw
    CALLS.append("varlen")
    cu = cu_seqlens_q.tolist()
    return torch.cat([attention_reference(q[a:e][None], k[a:e][None], v[a:e][None], causal)[0]
                      for a, e in zip(cu[:-1], cu[1:])]).to(q.dtype), None
"""


@pytest.fixture
def fa4_cache(tmp_path, monkeypatch):
    """A baselines cache whose `fa4` site holds the stand-in as `flash_attn/cute` (no __init__.py
    for `flash_attn`, as the wheel ships it); the modules it imports are dropped afterwards."""
    import sys

    site = tmp_path / "baselines" / "fa4" / "site"
    (site / "flash_attn" / "cute").mkdir(parents=True)
    (site / "flash_attn" / "cute" / "__init__.py").write_text(FAKE_FA4)
    write_stamp(tmp_path / "baselines" / "fa4", {"name": "fa4", "status": "ok", "site": str(site)})
    monkeypatch.setenv("REPRO_BASELINES", str(tmp_path / "baselines"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = {n for n in sys.modules if n.split(".")[0] == "flash_attn"}
    yield tmp_path / "baselines"
    for name in [n for n in sys.modules if n.split(".")[0] == "flash_attn" and n not in before]:
        del sys.modules[name]


def test_fa4_probe_says_why_without_the_package(tmp_path, monkeypatch):
    if importlib.util.find_spec("flash_attn") and importlib.util.find_spec("flash_attn.cute"):
        pytest.skip("flash-attn-4 is installed here")
    monkeypatch.setattr(upstream, "needs_cuda", lambda: None)  # as on a GPU machine
    monkeypatch.setenv("REPRO_BASELINES", str(tmp_path / "empty"))
    reason = load_experiment("flash_attention").backend("fa4").probe()
    assert reason and "flash_attn.cute" in reason and "baseline fa4 not built" in reason and "make baselines" in reason


def test_fa4_wrapper_calls_the_cache_install_by_keyword(fa4_cache, monkeypatch):
    import sys

    monkeypatch.setattr(upstream, "needs_cuda", lambda: None)
    exp = load_experiment("flash_attention")
    backend = exp.backend("fa4")
    assert backend.probe() is None and backend.refuses({"dtype": "bf16", "head_dim": 192}) is None
    base = {"batch": 2, "heads": 4, "heads_kv": 2, "seq_q": 40, "seq_k": 40, "head_dim": 64, "causal": True,
            "dtype": "bf16"}
    for case in (base, {**base, "batch": 3, "lengths": "1+40+17"}):
        inputs = exp.make_inputs(case, 4, "cpu")
        res = default_check(backend.build(case, inputs)(), exp.reference(case, inputs),
                            {"rel_l2": 1e-2, "max_abs_rel": 5e-2})
        assert res["passed"], res["error"]
    assert sys.modules["flash_attn.cute"].CALLS == ["padded", "varlen"]



def test_backends_refuse_what_they_do_not_implement_as_skipped_rows():
    """Cases a backend does not implement are declared on the Backend (a `skipped` row), not raised
    from its build (an `error` row)."""
    from repro.measure.experiment import load_experiment

    fa, gemm = load_experiment("flash_attention"), load_experiment("gemm")
    varlen = {"lengths": "1+4096", "head_dim": 128, "causal": True, "dtype": "bf16"}
    mla = {"batch": 1, "heads": 128, "heads_kv": 128, "seq_q": 2048, "seq_k": 2048, "head_dim": 192,
           "causal": True, "dtype": "bf16"}
    assert "variable-length" in fa.backend("triton").refuses(varlen)
    assert "head dim" in fa.backend("triton").refuses(mla)
    assert fa.backend("triton").refuses({**mla, "head_dim": 128}) is None
    square = {"M": 64, "N": 64, "K": 64}
    assert gemm.backend("triton").refuses({**square, "dtype": "fp8"})
    assert gemm.backend("deepgemm").refuses({**square, "dtype": "bf16"})
    assert gemm.backend("deepgemm").refuses({**square, "dtype": "fp8_block"}) is None
