"""DeepSeek-V3.2 lightning indexer: TileLang vs a plain PyTorch implementation (and DeepGEMM).

logits[i, j] = k_scale[j] * sum_h w[i, h] * relu(q[i, h] . k[j]) on each query's causal range,
-inf elsewhere; q, k fp8 e4m3 (64 heads x 128), fp32 out [t, s].

FLOPs (fp8) = 2 * heads * dim * valid_pairs, valid_pairs = sum over queries of visible positions
(the work an indexer must do; masked positions are not counted).
Bytes = q + k (1 B/elem) + k_scale, weights, ranges (4 B) + the fp32 logits written (4*t*s).
The gate's reference is computed in fp32 from the dequantized fp8 values (exact products, fp32
sums) by `reference`; the timed `torch` backend is the plain implementation on the same fp8
inputs (cuBLAS fp8 GEMM, then relu, head weights and mask in PyTorch), chunked over queries.
"""
from __future__ import annotations


from experiments import _dsa, upstream
from repro.measure.experiment import Backend, Experiment, needs_module
from repro.measure.tuning import KnobCache, search

SEARCH_CASE = {"t": 4096, "s": 16384, "mode": "prefill", "heads": 64, "dim": 128, "dtype": "fp8"}

KERNEL_FILES = ("kernels/dsa_indexer.py",)  # a searched schedule is kept per their version


def cases(cfg) -> list[dict]:
    return _dsa.grid_cases(cfg, heads=_dsa.INDEX_HEADS, dim=_dsa.INDEX_DIM, dtype="fp8")


def validate_case(case: dict) -> None:
    _dsa.check_causal(case)


def make_inputs(case: dict, seed: int, device: str) -> dict:
    import torch

    g = _dsa.generator(seed, device)
    t, s, h, d = case["t"], case["s"], case["heads"], case["dim"]
    q = torch.randn(t, h, d, generator=g, device=device).to(torch.float8_e4m3fn)
    k, k_scale = _dsa.per_token_fp8(torch.randn(s, d, generator=g, device=device))
    weights = torch.randn(t, h, generator=g, device=device) * h**-0.5
    starts, ends = _dsa.causal_ranges(t, s, device)
    out = torch.empty(t, s, device=device, dtype=torch.float32)
    return {"q": q, "k": k, "k_scale": k_scale, "weights": weights, "starts": starts, "ends": ends, "out": out}


def _logits_rows(scores, weights, k_scale, mask):
    """[c*h, n] raw scores -> [c, n] masked logits (relu, head weights, key scale)."""
    import torch

    c, h = weights.shape
    per_head = scores.relu_().view(c, h, -1)
    logits = torch.bmm(weights[:, None, :].float(), per_head).squeeze(1) * k_scale[None, :]
    return logits.masked_fill_(~mask, float("-inf"))


def _chunked(inputs: dict, out, matmul) -> None:
    """Fill out[t, s] chunk by chunk of queries; each chunk scores only its kv span."""
    q, k, k_scale, w = inputs["q"], inputs["k"], inputs["k_scale"], inputs["weights"]
    starts, ends = inputs["starts"], inputs["ends"]
    t, h, d = q.shape
    step = _dsa.query_chunk(t, h * k.shape[0])
    out.fill_(float("-inf"))
    for r0 in range(0, t, step):
        rows = slice(r0, min(r0 + step, t))
        lo, hi = int(starts[rows].min()), int(ends[rows].max())
        lo, hi = lo - lo % 16, min(k.shape[0], -(-hi // 16) * 16)  # fp8 GEMM wants multiples of 16
        if hi <= lo:
            continue
        scores = matmul(q[rows].reshape(-1, d), k[lo:hi])
        mask = _dsa.range_mask(starts[rows], ends[rows], lo, hi)
        out[rows, lo:hi] = _logits_rows(scores, w[rows], k_scale[lo:hi], mask)


def _float_matmul(a, b):
    return a.float() @ b.float().t()


def _fp8_matmul(a, b):
    """fp8 x fp8 -> fp32 on the tensor cores (cuBLAS), the plain way to use fp8 in PyTorch."""
    import torch

    if a.device.type != "cuda" or b.shape[0] % 16:
        return _float_matmul(a, b)
    one = torch.ones((), device=a.device, dtype=torch.float32)
    return torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)


def reference(case: dict, inputs: dict):
    import torch

    out = torch.empty(case["t"], case["s"], device=inputs["q"].device, dtype=torch.float32)
    with _dsa.exact_fp32():
        _chunked(inputs, out, _float_matmul)
    return out


def flops(case: dict) -> float:
    return 2.0 * case["heads"] * case["dim"] * _dsa.valid_pairs(case)


def bytes_moved(case: dict) -> float:
    t, s, h, d = case["t"], case["s"], case["heads"], case["dim"]
    return t * h * d + s * d + 4.0 * (s + t * h + 2 * t) + 4.0 * t * s


def _choice_key(case: dict) -> str:
    import torch

    return f"{case['heads']},{case['dim']},{torch.cuda.get_device_name()}"


def prepare(cases_: list[dict], backends: list[str]) -> None:
    """Pick the schedule once per GPU on a mid-size prefill chunk: the candidates differ in tile
    shape and stages, which do not depend on the lengths (the kv split, which does, is computed
    per case)."""
    if "tilelang" not in backends or not cases_:
        return
    from kernels._compile import compile_kernel
    from kernels.dsa_indexer import CANDIDATES, PASS_CONFIGS, dsa_indexer, indexer_knobs, lightning_indexer

    case = {**SEARCH_CASE, "heads": cases_[0]["heads"], "dim": cases_[0]["dim"]}
    h, d, t, s = case["heads"], case["dim"], case["t"], case["s"]
    names = ("q", "k", "k_scale", "weights", "starts", "ends")
    search(KnobCache("dsa_indexer", KERNEL_FILES), {_choice_key(case): case}, lambda c: range(len(CANDIDATES)),
           compile_one=lambda c, choice: compile_kernel(lightning_indexer, h, d, pass_configs=PASS_CONFIGS,
                                                        **indexer_knobs(h, d, t, s, choice=choice)),
           runner=lambda c, x, choice, kernel: (lambda: dsa_indexer(*[x[n] for n in names], out=x["out"],
                                                                    choice=choice)),
           make_inputs=lambda c: make_inputs(c, 0, "cuda"), encode=lambda choice: {"choice": choice})


def build_tilelang(case: dict, inputs: dict):
    from kernels.dsa_indexer import dsa_indexer

    found = KnobCache("dsa_indexer", KERNEL_FILES).get(_choice_key(case))
    choice = found["choice"] if found else 0
    args = [inputs[k] for k in ("q", "k", "k_scale", "weights", "starts", "ends")]
    out = inputs["out"]
    dsa_indexer(*args, out=out, choice=choice)  # compile outside the timed callable
    return lambda: dsa_indexer(*args, out=out, choice=choice)


def build_torch(case: dict, inputs: dict):
    out = inputs["out"]

    def run():
        _chunked(inputs, out, _fp8_matmul)
        return out

    return run


def build_deepgemm(case: dict, inputs: dict):
    import deep_gemm

    q, kv = inputs["q"], (inputs["k"], inputs["k_scale"])
    w, starts, ends = inputs["weights"], inputs["starts"], inputs["ends"]
    return lambda: deep_gemm.fp8_mqa_logits(q, kv, w, starts, ends)


def upstream_supports(case: dict):
    """TileLang's published indexer (fp8_lighting_indexer.py) packs 128 // heads queries per block."""
    return None if 128 % case["heads"] == 0 else f"the example needs heads dividing 128, not {case['heads']}"


def build_tilelang_upstream(case: dict, inputs: dict):
    """TileLang's published lightning indexer: our formula and layouts (q [t*h, d] fp8, k [s, d]
    fp8, k_scale [s], weights [t, h], int32 ranges), logits [t, s] fp32 that it allocates. Two
    kernels, as its mqa_attn_return_logits_interface runs them: the logits over each block's kv
    span, then clean_logits_ (-inf outside each query's range). Both are compiled here and
    called directly, without the interface's per-call elaboration."""
    q, k, k_scale, w, starts, ends = (inputs[n] for n in ("q", "k", "k_scale", "weights", "starts", "ends"))
    args = (q.view(-1, q.shape[-1]), k, k_scale, w, starts, ends)
    ex = upstream.example(upstream.INDEXER)
    key = ("dsa_indexer", *q.shape, k.shape[0])
    logits = upstream.compiled(key, lambda: ex.mqa_attn_return_logits.compile(*args))
    clean = upstream.compiled((*key, "clean"), lambda: ex.clean_logits_.compile(logits(*args), starts, ends))

    def run():
        out = logits(*args)
        clean(out, starts, ends)
        return out

    return run


EXPERIMENT = Experiment(
    name="dsa_indexer",
    cases=cases,
    make_inputs=make_inputs,
    reference=reference,
    flops=flops,
    bytes=bytes_moved,
    backends=[
        Backend("tilelang", build=build_tilelang, probe=needs_module("tilelang")),
        Backend("torch", build=build_torch, trusted=True),
        Backend("deepgemm", build=build_deepgemm, probe=needs_module("deep_gemm")),
        Backend("tilelang_upstream", build=build_tilelang_upstream, probe=upstream.upstream_probe(upstream.INDEXER),
                dtypes=("fp8",), supports=upstream_supports),
    ],
    baseline="torch",
    validate_case=validate_case,
    flops_dtype=lambda case: "fp8",
    prepare=prepare,
    sources=("experiments/_dsa.py",),
    schedule=lambda case: KnobCache("dsa_indexer", KERNEL_FILES).describe(_choice_key(case)),
)
