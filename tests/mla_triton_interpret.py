"""Run with TRITON_INTERPRET=1: the Triton MLA decode, split and unsplit, against the reference.

A script (not a test module) because the interpreter must be chosen before Triton compiles
anything in the process.
"""
import math
import sys

import torch

from kernels.mla_common import mla_decode_reference
from kernels.triton.mla_decode import TritonKnobs, mla_decode


def shuffled_case(lens, s_q, h_q, seed):
    g = torch.Generator().manual_seed(seed)
    pages = [math.ceil(n / 64) for n in lens]
    perm = torch.randperm(sum(pages), generator=g).int()
    table = torch.zeros(len(lens), max(pages), dtype=torch.int32)
    offsets = [0, *torch.tensor(pages).cumsum(0).tolist()]
    for i, n in enumerate(pages):
        table[i, :n] = perm[offsets[i]:offsets[i + 1]]
    q = torch.randn(len(lens), s_q, h_q, 576, generator=g).half()
    kv = torch.randn(sum(pages), 64, 1, 576, generator=g).half()
    return q, kv, table, torch.tensor(lens, dtype=torch.int32)


def main() -> int:
    failures = 0
    for lens, s_q, h_q, splits in [([70, 129], 1, 16, 1), ([65, 200, 33], 2, 16, 3), ([2, 64], 2, 32, 2)]:
        q, kv, table, cl = shuffled_case(lens, s_q, h_q, seed=len(lens) + splits)
        knobs = TritonKnobs(block_H=min(64, s_q * h_q), block_N=32, num_splits=splits)
        out, lse = mla_decode(q, kv, table, cl, knobs=knobs)
        ref_out, ref_lse = mla_decode_reference(q, kv, table, cl)
        err = max((out.float() - ref_out).abs().max().item(), (lse - ref_lse).abs().max().item())
        ok = torch.isfinite(out).all() and err < 5e-3
        failures += not ok
        print(f"lens={lens} s_q={s_q} h_q={h_q} splits={splits} max_err={err:.2e} {'ok' if ok else 'FAIL'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
