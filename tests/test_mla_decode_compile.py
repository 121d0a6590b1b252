"""CPU checks of MLA decode: TileLang variants compile for Hopper, the fp32 reference matches a
naive per-sequence loop, the Triton kernel matches it under Triton's interpreter, bad input is
refused with a clear message."""
from __future__ import annotations

import inspect
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kernels import mla_decode as tl_mla
from kernels._compile import HOPPER, compile_kernel
from kernels.mla_common import check_mla_inputs, mla_decode_reference

ROOT = Path(__file__).resolve().parent.parent


def paged_inputs(lens, s_q=1, h_q=16, dtype=torch.float16, seed=0):
    """q, a cache with shuffled pages, the block table and lengths, on the CPU."""
    g = torch.Generator().manual_seed(seed)
    pages = [math.ceil(n / 64) for n in lens]
    perm = torch.randperm(sum(pages), generator=g).int()
    table = torch.zeros(len(lens), max(pages), dtype=torch.int32)
    start = 0
    for i, n in enumerate(pages):
        table[i, :n] = perm[start:start + n]
        start += n
    q = torch.randn(len(lens), s_q, h_q, 576, generator=g).to(dtype)
    kv = torch.randn(sum(pages), 64, 1, 576, generator=g).to(dtype)
    return q, kv, table, torch.tensor(lens, dtype=torch.int32)


def naive_decode(q, kv, table, lens):
    """One sequence, one query token at a time, straight from the definition."""
    b, s_q, h_q, d = q.shape
    out = torch.zeros(b, s_q, h_q, 512, dtype=torch.float64)
    lse = torch.zeros(b, h_q, s_q, dtype=torch.float64)
    for i in range(b):
        n = int(lens[i])
        keys = torch.cat([kv[int(p), :, 0] for p in table[i, :math.ceil(n / 64)]])[:n].double()
        for t in range(s_q):
            visible = n - (s_q - 1 - t)
            s = q[i, t].double() @ keys[:visible].T / math.sqrt(d)
            lse[i, :, t] = torch.logsumexp(s, dim=-1)
            out[i, t] = torch.softmax(s, dim=-1) @ keys[:visible, :512]
    return out, lse


@pytest.mark.parametrize("s_q,h_q,lens", [(1, 16, [1, 64, 200]), (2, 32, [2, 65, 129, 64]), (2, 16, [3000])])
def test_reference_matches_naive_loop(s_q, h_q, lens):
    q, kv, table, cl = paged_inputs(lens, s_q, h_q)
    out, lse = mla_decode_reference(q, kv, table, cl)
    want_out, want_lse = naive_decode(q, kv, table, cl)
    assert out.shape == (len(lens), s_q, h_q, 512) and lse.shape == (len(lens), h_q, s_q)
    torch.testing.assert_close(out.double(), want_out, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(lse.double(), want_lse, atol=2e-5, rtol=1e-5)


VARIANTS = [(h, s, dt) for dt in ("float16", "bfloat16") for s in (1, 2) for h in (16, 64, 128)]


@pytest.mark.parametrize("h_q,s_q,dtype", VARIANTS)
def test_tilelang_split_kernel_compiles_for_hopper(h_q, s_q, dtype):
    k = tl_mla.choose_knobs(128, h_q, s_q, dtype, 4096)
    kernel = compile_kernel(tl_mla.mla_decode_split_kv, h_q, s_q, dtype, 576 ** -0.5, k.block_H,
                            k.block_N, k.num_splits, k.stages, k.threads, target=HOPPER)
    src = kernel.get_kernel_source()
    assert "split_kv" in src
    if s_q * h_q >= 64:
        assert "wgmma" in src  # 64-row tiles must reach the Hopper tensor-core path


@pytest.mark.parametrize("h_q,s_q,dtype", [(128, 1, "bfloat16"), (16, 2, "float16")])
def test_tilelang_split_and_combine_compile_for_the_adversarial_case(h_q, s_q, dtype):
    k = tl_mla.choose_knobs(32, h_q, s_q, dtype, 65536, 65536 + 31 * 1024)
    assert k.num_splits > 1  # one 64k sequence among 1k ones must be cut into chunks
    compile_kernel(tl_mla.mla_decode_split_kv, h_q, s_q, dtype, 576 ** -0.5, k.block_H, k.block_N,
                   k.num_splits, k.stages, k.threads, target=HOPPER)
    compile_kernel(tl_mla.mla_decode_combine, h_q, s_q, dtype, k.num_splits, target=HOPPER)


def code_lines(fn) -> int:
    lines = inspect.getsource(fn).splitlines()
    doc = inspect.getdoc(fn) or ""
    body = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    return len(body) - len(doc.splitlines())


def test_builders_stay_short():
    assert code_lines(tl_mla.mla_decode_split_kv) <= 100
    assert code_lines(tl_mla.mla_decode_combine) <= 100


def test_knobs_split_small_batches_only():
    assert tl_mla.choose_knobs(128, 128, 1, "bfloat16", 8192).num_splits == 1
    assert tl_mla.choose_knobs(8, 128, 1, "bfloat16", 8192).num_splits > 1


def _expect(msg, *args, **kw):
    with pytest.raises(ValueError, match=msg):
        check_mla_inputs(*args, **kw)


def test_bad_inputs_are_refused():
    q, kv, table, lens = paged_inputs([100, 70], s_q=1, h_q=16)
    _expect("d_qk = d_v", q[..., :500].contiguous(), kv, table, lens)
    _expect("d_qk = d_v", q, kv, table, lens, d_v=448)
    _expect("share one dtype", q.bfloat16(), kv, table, lens)
    _expect("block table too short", q, kv, table[:, :1].contiguous(), lens)
    _expect("longer than the cache", q, kv[:2], table.clamp_max(1), torch.tensor([100, 170], dtype=torch.int32))
    _expect("int32", q, kv, table.long(), lens)
    _expect("new token", *paged_inputs([1, 70], s_q=2, h_q=16))
    _expect("outside", q, kv, table + 10, lens)
    with pytest.raises(ValueError, match="block table too short"):
        tl_mla.mla_decode(q, kv, table[:, :1].contiguous(), lens)  # the wrapper checks first


@pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter check is for CPU-only machines")
def test_triton_kernel_matches_reference_in_interpreter():
    pytest.importorskip("triton")
    script = ROOT / "tests" / "mla_triton_interpret.py"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
