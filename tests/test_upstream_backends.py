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
}
EXPERIMENTS = {"mla_decode": upstream.MLA_DECODE, "sparse_mla": upstream.SPARSE_MLA,
               "dsa_indexer": upstream.INDEXER, "dsa_topk": upstream.TOPK}


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
