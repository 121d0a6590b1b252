"""The baselines `make baselines` built, run on the GPU against PyTorch's attention.

Each test skips with the cache's own reason when its baseline is not built (or not usable)."""
from __future__ import annotations

import pytest

from repro.baselines import activate, upstream_example, upstream_missing, usable, why_unusable

pytestmark = pytest.mark.gpu
FA_EXAMPLE = "examples/flash_attention/example_mha_fwd_bshd.py"


def _need(name: str) -> None:
    if usable(name) is None:
        pytest.skip(why_unusable(name))


def _qkv(b=2, s=1024, h=8, d=128, dtype=None):
    import torch

    g = torch.Generator(device="cuda").manual_seed(0)
    dtype = dtype or torch.float16
    return [torch.randn(b, s, h, d, device="cuda", generator=g).to(dtype) for _ in range(3)]


def _sdpa(q, k, v, causal):
    import torch.nn.functional as F

    out = F.scaled_dot_product_attention(*(x.transpose(1, 2).float() for x in (q, k, v)), is_causal=causal)
    return out.transpose(1, 2)


def _rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("name,module", [("fa2", "flash_attn"), ("fa3", "flash_attn_interface")])
@pytest.mark.parametrize("causal", [False, True])
def test_built_flash_attention_matches_sdpa(name, module, causal):
    import importlib

    _need(name)
    activate()
    fn = importlib.import_module(module).flash_attn_func
    q, k, v = _qkv()
    out = fn(q, k, v, causal=causal)
    out = out[0] if isinstance(out, tuple) else out
    assert _rel(out, _sdpa(q, k, v, causal)) < 2e-3


def test_flash_mla_imports_and_schedules():
    import torch

    _need("flash_mla")
    activate()
    from flash_mla import get_mla_metadata

    lens = torch.full((4,), 1024, dtype=torch.int32, device="cuda")
    meta, splits = get_mla_metadata(lens, 128, 1)
    assert splits.numel() == 5


@pytest.mark.parametrize("causal", [False, True])
def test_tilelang_published_flash_attention_example(causal):
    reason = upstream_missing(FA_EXAMPLE)
    if reason:
        pytest.skip(reason)
    q, k, v = _qkv()
    b, s, h, d = q.shape
    kernel = upstream_example(FA_EXAMPLE).flashattn(b, h, s, d, causal, block_M=128, block_N=128,
                                                    num_stages=1, threads=128)
    assert _rel(kernel(q, k, v), _sdpa(q, k, v, causal)) < 2e-3
