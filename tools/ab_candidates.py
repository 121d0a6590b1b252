"""A/B of kernel candidates against the defaults they would replace, in one run on one GPU, with
the suite's timer and gate: each pair is timed in interleaved trials (A B B A), and a candidate
becomes a default only when no case is slower beyond noise.

    python tools/ab_candidates.py mla gemm ws --out outputs/ab   # on a GPU: a CSV per study, manifest.json

  mla   MLA decode: the default it replaced (Knobs(pad_rows=False, balanced=False)) against
        Knobs() (32-row tiles padded to 64 rows for wgmma where the pieces are long; the plan
        that picks its cap by simulated finish time, a cut sequence costing more), on the grid's
        weakest cases, a few controls and 32-row cases from 4 to 128 blocks per sequence
  mla-pad   32-row tiles always padded (Knobs(pad_rows=True, balanced=False)) against the
        replaced default on the 32-row length sweep: where padding starts to pay
  ws    MLA decode: the warp-specialized candidate (Knobs(kernel="ws")) against Knobs()
  seesaw  MLA decode: FlashMLA's seesaw schedule (Knobs(kernel="seesaw"), 64-key blocks) against Knobs()
  seesaw32  the same with four 32-key buffers (the next pair loads during this one)
  seesaw32-sweep  the 32-key seesaw kernel against the split kernel on every length of the 32-row
        sweep (4 to 128 blocks per sequence): where the threshold that picks it should sit
  seesaw-auto  Knobs() (kernel=None: the seesaw kernel, 32-key blocks, where make_plan would pad
        32-row tiles) against Knobs(kernel="split"), on the 32-row length sweep and the grid's weakest cases
  lean  the split kernel's last block masked only where the length ends inside it, and the final
        output stored through shared memory (Knobs(lean_tail=True, staged_out=True)) against Knobs(),
        each alone too, on the grid's weakest cases and TileLang's README grid at 1k-4k
  combine  the wide combine (Knobs(combine="wide")) against Knobs() on the cases that cut sequences
  pingpong  FlashMLA's own schedule (Knobs(kernel="pingpong"): TMA per 64-column slice, scores of
        the next pair rotated into this one) against Knobs(), on the 64-row cases
  auto  Knobs() (make_plan takes the seesaw kernel from 12 blocks per piece, the pingpong kernel
        for 64-row tiles from 64, the split kernel lean) against the default it replaces (seesaw
        from 32 blocks, no pingpong, no lean), on every case of the studies above and the thresholds
  pingpong-from  Knobs(pingpong_from=16) and (pingpong_from=32) against Knobs() (64) on the 64-row
        cases whose pieces average 16-63 blocks (TileLang's README grid at 1k-4k, odd batches):
        where the pingpong kernel's threshold should sit
  fa-overlap  FlashAttention forward: each overlap candidate of kernels/flash_attention.CANDIDATES
        (FA3's schedule, spill-free since 2026-12-03) against the table's serial schedule, FA3
        beside when its package imports, on FA3-grid, GQA, odd-length and head-dim 64/256 cases
  sparse-bwd-atomics  the sparse MLA backward with its dkv rows staged in shared memory and added
        by 16-byte atomics (vector_atomics=True; the default at 16 heads since) against two floats per atomic, on
        the sparse_mla_bwd grid (128 and 16 heads) and odd shapes
  gemm  GEMM: heuristic_knobs (the default it replaced) against default_knobs (model_knobs where
        it measured faster), bf16, on the schedule study's 30 shapes and 24 it never saw, cuBLAS beside
  gemm-study  every schedule of study_menu on the study's 30 shapes, one timing each: the data
        model_knobs is fit to (tile widths 160/192 that fill a wave are in it, untimed so far)
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from repro.measure.experiment import TORCH_DTYPES  # noqa: E402 (the repository root on the path first)

TRIALS = ("a", "b", "b", "a")


def _timer():
    from repro.measure.settings import TimerSettings
    from repro.measure.timer import L2Flusher, time_cuda

    settings = TimerSettings(warmup_ms=20, rep_ms=80, min_reps=10, max_reps=200, flush_l2=True, cuda_graph=False)
    flusher = L2Flusher()
    return lambda fn: time_cuda(fn, settings, flusher).median_ms


def _gated_pair(time_it, fns: dict, ref, tol: dict) -> tuple[dict, list]:
    """Each side's output through the sweep's gate, then the interleaved trials of both."""
    from repro.measure.gate import default_check

    gate = [bool(default_check(fns[side](), ref, tol)["passed"]) for side in ("a", "b")]
    return _pair(time_it, fns), gate


def _pair(time_it, fns: dict) -> dict:
    """Interleaved trials; the mean of each side's trial medians."""
    got = {"a": [], "b": []}
    for side in TRIALS:
        got[side].append(time_it(fns[side]))
    return {side: sum(v) / len(v) for side, v in got.items()} | {f"{s}_trials": got[s] for s in got}


MLA_CASES = [dict(batch=128, h_q=16, s_q=2, seqlen=8192, lengths="varied"), dict(batch=128, h_q=32, seqlen=8192, lengths="varied"),
             dict(batch=128, h_q=32, seqlen=8192, lengths="equal"), dict(batch=128, h_q=16, s_q=2, seqlen=8192, lengths="equal"),
             dict(batch=128, h_q=16, seqlen=8192, lengths="varied"), dict(batch=128, h_q=16, seqlen=8192, lengths="equal"),
             dict(batch=128, h_q=128, seqlen=8192, lengths="equal"), dict(batch=128, h_q=128, seqlen=8192, lengths="varied"),
             dict(batch=64, h_q=128, seqlen=8192, lengths="equal", dtype="fp16"),
             dict(batch=128, h_q=64, s_q=2, seqlen=8192, lengths="varied"), dict(batch=32, h_q=128, seqlen=1024, lengths="one_long"),
             dict(batch=32, h_q=16, seqlen=1024, lengths="one_long"), dict(batch=128, h_q=128, seqlen=64, lengths="short"),
             dict(batch=128, h_q=16, s_q=2, seqlen=64, lengths="match_over_page"), dict(batch=37, h_q=128, seqlen=300, lengths="short"),
             dict(batch=3, h_q=32, s_q=2, seqlen=5000, lengths="varied")]


@contextlib.contextmanager
def _one_case(study: str, label: str):
    """One case of a study: a failure is named and the other cases go on; device memory is freed after."""
    import torch

    try:
        yield
    except Exception as exc:
        print(f"{study} {label}: FAILED {type(exc).__name__}: {str(exc)[-300:]}", flush=True)
    finally:
        torch.cuda.empty_cache()


def _tolerance(experiment: str, dtype: str) -> dict:
    """The sweep's gate: configs/bench/default.yaml, overridden by the experiment's `tolerance`."""
    import yaml

    root = Path(__file__).resolve().parents[1] / "configs"
    bench = yaml.safe_load((root / "bench" / "default.yaml").read_text())
    own = yaml.safe_load((root / "experiment" / f"{experiment}.yaml").read_text()).get("tolerance") or {}
    return {**bench["tolerance"][dtype], **own.get(dtype, {})}


PAD_SWEEP = [dict(batch=batch, h_q=h_q, s_q=s_q, seqlen=seqlen, lengths="equal") for h_q, s_q in ((16, 2), (32, 1))
             for batch, seqlen in ((128, 256), (128, 1024), (128, 2048), (128, 4096), (16, 8192))]
# Beyond the grid for the 64-row kernels: batch 1, an odd block count, s_q 2 at h_q 64, long and skewed.
PINGPONG_CASES = [dict(batch=1, h_q=128, seqlen=32768, lengths="equal"), dict(batch=16, h_q=128, seqlen=4033, lengths="equal"),
                  dict(batch=64, h_q=64, s_q=2, seqlen=4096, lengths="varied", dtype="fp16"),
                  dict(batch=128, h_q=128, s_q=2, seqlen=8192, lengths="equal"), dict(batch=32, h_q=64, seqlen=1024, lengths="one_long")]
# Sequences cut into many pieces: one long sequence alone, a few long ones.
COMBINE_CASES = [dict(batch=1, h_q=128, seqlen=65536, lengths="equal"), dict(batch=1, h_q=16, s_q=2, seqlen=131072, lengths="equal"),
                 dict(batch=4, h_q=64, seqlen=32768, lengths="varied"), dict(batch=8, h_q=32, seqlen=16384, lengths="equal")]
# TileLang's README grid where the split kernel trails TileLang's example most (short equal lengths).
LEAN_CASES = [dict(batch=batch, h_q=128, seqlen=seqlen, lengths="equal", dtype="fp16") for batch in (64, 128)
              for seqlen in (1024, 2048, 4096)] + [dict(batch=128, h_q=64, s_q=2, seqlen=1000, lengths="equal")]
REPLACED = {"pad_rows": False, "balanced": False, "lean_tail": False, "staged_out": False}  # before 2026-12-03
# The default of 2026-12-03 (seesaw from 32 blocks per piece, no pingpong, no lean split kernel).
PREVIOUS = {"lean_tail": False, "staged_out": False, "seesaw_from": 32, "pingpong_from": None}
# Where the kernel choice changes: 32-row tiles at 8-12 blocks per piece, 64-row tiles at 32-64.
AUTO_CASES = [dict(batch=128, h_q=h_q, s_q=s_q, seqlen=seqlen, lengths=lengths) for h_q, s_q in ((16, 2), (32, 1))
              for seqlen in (512, 768) for lengths in ("equal", "varied")] + [
    dict(batch=128, h_q=128, seqlen=4096, lengths="equal"), dict(batch=64, h_q=128, seqlen=4096, lengths="varied"),
    dict(batch=128, h_q=64, s_q=2, seqlen=2048, lengths="equal"), dict(batch=132, h_q=64, seqlen=4096, lengths="varied"),
    dict(batch=2, h_q=128, seqlen=131072, lengths="equal")]


def mla(out: Path, candidate: dict, name: str, base: dict | None = None, cases: list | None = None) -> None:
    from experiments import mla_decode as E
    from kernels import mla_decode as M
    from repro.measure.gate import default_check

    from concurrent.futures import ProcessPoolExecutor

    started, jobs = time.time(), set()
    for spec in cases or MLA_CASES:
        for knobs in (M.Knobs(**(base or {})), M.Knobs(**candidate)):
            for pad in ((False, True) if knobs.pad_rows is None else (knobs.pad_rows,)):
                jobs.add((spec["h_q"], spec.get("s_q", 1), spec.get("dtype", "bf16"), replace(knobs, pad_rows=pad)))
            if knobs.kernel is None:  # the warp-specialized kernels make_plan may take
                rows = spec["h_q"] * spec.get("s_q", 1)
                for auto in ([replace(knobs, kernel="seesaw", block_N=32, stages=4)] if 16 < rows < 64 else []) + (
                        [replace(knobs, kernel="pingpong")] if rows % 64 == 0 else []):
                    jobs.add((spec["h_q"], spec.get("s_q", 1), spec.get("dtype", "bf16"), replace(auto, pad_rows=False)))
    with ProcessPoolExecutor(8) as pool:  # fills TileLang's kernel cache in parallel
        list(pool.map(_precompile_mla, sorted(jobs, key=str)))
    print(f"{name}: {len(jobs)} kernels compiled in {time.time() - started:.0f} s", flush=True)
    time_it = _timer()
    with open(out / f"{name}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "default_ms", "candidate_ms", "speedup", "default_trials", "candidate_trials", "gate"])
        for spec in cases or MLA_CASES:
            case = {"grid": "ab", "dtype": "bf16", "s_q": 1, **spec}
            with _one_case(name, str(spec)):
                inputs = E.make_inputs(case, 1, "cuda")
                ref, args = E.reference(case, inputs), E._args(inputs)
                fns, gate = {}, []
                for side, knobs in (("a", M.Knobs(**(base or {}))), ("b", M.Knobs(**candidate))):
                    plan = M.make_plan(inputs["cache_seqlens"], case["h_q"], case["s_q"], knobs)
                    check = default_check(M.mla_decode(*args, plan=plan, check=True), ref, _tolerance("mla_decode", case["dtype"]))
                    gate.append(bool(check["passed"]))
                    fns[side] = (lambda p=plan: M.mla_decode(*args, plan=p, check=False))
                t = _pair(time_it, fns)
                label = ",".join(f"{k}={v}" for k, v in spec.items())
                w.writerow([label, t["a"], t["b"], t["a"] / t["b"], t["a_trials"], t["b_trials"], gate])
                fh.flush()  # a run cut short keeps what it measured
                print(f"{name} {label}: default {t['a'] * 1e3:.1f} us, candidate {t['b'] * 1e3:.1f} us "
                      f"({t['a'] / t['b']:.2f}x), gate {gate}", flush=True)
                del inputs, ref


def _precompile_mla(job):
    """Compile one MLA decode kernel (h_q, s_q, dtype, knobs) into TileLang's kernel cache."""
    from kernels import mla_decode as M

    h_q, s_q, dtype, knobs = job
    try:
        M.compile_attention(h_q, s_q, TORCH_DTYPES[dtype], M.D_QK ** -0.5,
                            M.builder_args(knobs), knobs.kernel)
    except Exception as exc:  # the timed pass names it
        return str(exc)[-200:]


# (batch, heads, heads_kv, seqlen, head dim, causal, dtype): issue 27's cases, GQA, odd lengths, d 64 / 256.
FA_CASES = [(4, 16, 16, 4096, 128, False, "bf16"), (4, 16, 16, 4096, 128, True, "bf16"), (2, 16, 16, 8192, 128, False, "bf16"),
            (1, 16, 16, 16384, 128, True, "bf16"), (2, 16, 16, 4096, 128, True, "fp16"), (8, 32, 32, 2048, 64, False, "bf16"),
            (2, 8, 8, 8192, 256, True, "bf16"), (1, 32, 8, 3000, 128, True, "bf16"), (2, 64, 8, 4096, 128, False, "bf16"),
            (16, 16, 16, 1000, 128, False, "bf16"), (4, 16, 16, 4096, 64, True, "fp16"), (1, 16, 16, 32768, 128, True, "bf16")]


def fa_overlap(out: Path) -> None:
    from experiments import flash_attention as E
    from kernels.flash_attention import CANDIDATES, OVERLAP, tuned_knobs

    try:  # the suite's built FA3 (make baselines), as the experiment imports it
        from repro.baselines import import_from

        fa3 = import_from("fa3", "flash_attn_interface").flash_attn_func
    except ImportError:
        fa3 = None
    from concurrent.futures import ProcessPoolExecutor

    started = time.time()
    jobs = [(c, kn) for c in FA_CASES for kn in [tuned_knobs(c[4], c[5], TORCH_DTYPES[c[6]])]
            + [k for k in CANDIDATES[c[4]] if k.schedule == OVERLAP]]
    with ProcessPoolExecutor(16) as pool:  # fills TileLang's kernel cache in parallel
        list(pool.map(_precompile_fa, jobs))
    print(f"fa_overlap: {len(jobs)} kernels compiled in {time.time() - started:.0f} s", flush=True)
    time_it = _timer()
    with open(out / "fa_overlap.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "candidate", "default_ms", "candidate_ms", "speedup", "fa3_ms", "default_trials",
                    "candidate_trials", "gate"])
        for batch, heads, heads_kv, seqlen, dim, causal, dtype in FA_CASES:
            case = E._case(batch, heads, heads_kv, seqlen, seqlen, dim, causal, dtype)
            label = f"b{batch} h{heads}:{heads_kv} s{seqlen} d{dim} {'causal ' if causal else ''}{dtype}"
            with _one_case("fa_overlap", label):
                inputs = E.make_inputs(case, 1, "cuda")
                ref, tol = E.reference(case, inputs), _tolerance("flash_attention", dtype)
                q, k, v = inputs["q"], inputs["k"], inputs["v"]
                fa3_ms = time_it(lambda: fa3(q, k, v, causal=causal)) if fa3 else float("nan")
                for knobs in [c for c in CANDIDATES[dim] if c.schedule == OVERLAP]:
                    fns = {"a": E.build_tilelang(case, inputs, knobs=tuned_knobs(dim, causal, TORCH_DTYPES[dtype])),
                           "b": E.build_tilelang(case, inputs, knobs=knobs)}
                    t, gate = _gated_pair(time_it, fns, ref, tol)
                    name = f"{knobs.block_M}x{knobs.block_N} s{knobs.num_stages} t{knobs.threads}"
                    w.writerow([label, name, t["a"], t["b"], t["a"] / t["b"], fa3_ms, t["a_trials"], t["b_trials"], gate])
                    fh.flush()
                    print(f"fa_overlap {label} {name}: serial {t['a'] * 1e3:.0f} us, overlap {t['b'] * 1e3:.0f} us "
                          f"({t['a'] / t['b']:.2f}x), FA3 {fa3_ms * 1e3:.0f} us, gate {gate}", flush=True)
                del inputs, ref


# [t, s] per head count: the experiment's grid, then odd sizes (fewer positions than topk, long kv).
SPARSE_BWD_CASES = [(t, s, h) for h in (128, 16) for t, s in ((512, 8192), (2048, 16384), (4096, 8192), (4096, 4096))] + [
    (300, 2100, 128), (1000, 70001, 16), (37, 65536, 64)]


def sparse_bwd_atomics(out: Path) -> None:
    from experiments import sparse_mla as F
    from experiments import sparse_mla_bwd as E
    from kernels.sparse_mla import sparse_mla
    from kernels.sparse_mla_bwd import sparse_mla_backward

    time_it = _timer()
    with open(out / "sparse_bwd_atomics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "default_ms", "candidate_ms", "speedup", "default_trials", "candidate_trials", "gate"])
        for t, s, heads in SPARSE_BWD_CASES:
            case = {"t": t, "s": s, "mode": "prefill", "heads": heads, "d_qk": 576, "d_v": 512, "topk": 2048, "dtype": "bf16"}
            label = f"t={t},s={s},heads={heads}"
            with _one_case("sparse_bwd_atomics", label):
                inputs = E.make_inputs(case, 1, "cuda")
                ref, tol = E.reference(case, inputs), _tolerance("sparse_mla_bwd", "bf16")
                q, kv, idx, d_out, scale = inputs["q"], inputs["kv"], inputs["indices"], inputs["d_out"], F.sm_scale(case)
                o, lse = sparse_mla(q, kv, idx, scale, 512)
                fns = {side: (lambda v=vec: sparse_mla_backward(q, kv, idx, o, lse, d_out, scale, vector_atomics=v))
                       for side, vec in (("a", False), ("b", True))}
                t_, gate = _gated_pair(time_it, fns, ref, tol)
                w.writerow([label, t_["a"], t_["b"], t_["a"] / t_["b"], t_["a_trials"], t_["b_trials"], gate])
                fh.flush()
                print(f"sparse_bwd_atomics {label}: default {t_['a']:.2f} ms, candidate {t_['b']:.2f} ms "
                      f"({t_['a'] / t_['b']:.2f}x), gate {gate}", flush=True)
                del inputs, ref


def _precompile_fa(job):
    """Compile one FlashAttention forward (a FA_CASES entry, knobs) into TileLang's kernel cache."""
    from kernels.flash_attention import compile_flash_attention

    (batch, heads, heads_kv, seqlen, dim, causal, dtype), knobs = job
    try:
        compile_flash_attention(batch, heads, heads_kv, seqlen, seqlen, dim, causal,
                                TORCH_DTYPES[dtype], knobs, with_out=True)
    except Exception as exc:  # the timed pass names it
        return str(exc)[-200:]


GEMM_STUDY = [(129, 4096, 4096), (257, 4096, 4096), (128, 2112, 7168), (200, 7168, 2048), (3, 4096, 14336), (1, 18432, 7168),
              (4096, 7168, 2048), (1024, 1024, 1024), (5000, 5000, 5000), (8192, 8192, 8192), (1000, 3000, 777), (512, 512, 512),
              (2048, 2048, 2048), (16, 4096, 4096), (64, 8192, 8192), (256, 10240, 8192), (512, 4096, 4096), (384, 7168, 2048),
              (8, 57344, 8192), (128, 7168, 16384), (1536, 1536, 1536), (4096, 4096, 4096), (8192, 1536, 7168), (8192, 7168, 2048),
              (2000, 7168, 2048), (192, 24576, 1536), (32, 32768, 512), (100, 4096, 4096), (1000, 1000, 1000), (3000, 3000, 3000)]
GEMM_UNSEEN = [(2, 7168, 2048), (48, 4096, 4096), (96, 8192, 8192), (128, 4096, 4096), (160, 4096, 14336), (256, 4096, 4096),
               (320, 8192, 8192), (640, 2048, 2048), (768, 768, 768), (1280, 5120, 5120), (2304, 2304, 2304), (6144, 6144, 6144),
               (4000, 4000, 4000), (12288, 4096, 4096), (1024, 14336, 4096), (512, 1536, 7168), (33, 7168, 2048), (65, 4096, 4096),
               (130, 8192, 1024), (384, 384, 384), (192, 7168, 2048), (24, 28672, 8192), (1000, 8192, 3000), (3000, 1000, 8192)]


def gemm(out: Path) -> None:
    from concurrent.futures import ProcessPoolExecutor

    import torch

    from kernels.gemm import default_knobs, heuristic_knobs, plan_gemm

    shapes = [(s, "study") for s in GEMM_STUDY] + [(s, "unseen") for s in GEMM_UNSEEN]
    started = time.time()
    with ProcessPoolExecutor(16) as pool:  # fills TileLang's kernel cache in parallel
        list(pool.map(_precompile, [(*s, k) for s, _ in shapes for k in {heuristic_knobs(*s), default_knobs(*s)}]))
    print(f"gemm: compiled in {time.time() - started:.0f} s", flush=True)
    time_it = _timer()
    with open(out / "gemm.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["M", "N", "K", "set", "default", "candidate", "default_ms", "candidate_ms", "cublas_ms",
                    "default_trials", "candidate_trials"])
        for (M, N, K), which in shapes:
            torch.manual_seed(0)
            a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
            b = torch.randn(K, N, device="cuda", dtype=torch.bfloat16)
            ref, c = a.float() @ b.float(), torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
            pair = {"a": heuristic_knobs(M, N, K), "b": default_knobs(M, N, K)}
            fns = {}
            for side, knobs in pair.items():
                plan = plan_gemm(M, N, K, "bf16", knobs)
                c.fill_(float("nan"))
                plan(a, b, c)
                err = float((c.float() - ref).norm() / ref.norm())
                if not err < 1e-2:
                    raise SystemExit(f"gemm {M}x{N}x{K} {side}: relative error {err:.3g}")
                fns[side] = (lambda p=plan: p(a, b, c))
            t = _pair(time_it, fns)
            cublas = time_it(lambda: torch.matmul(a, b, out=c))
            w.writerow([M, N, K, which, pair["a"], pair["b"], t["a"], t["b"], cublas, t["a_trials"], t["b_trials"]])
            fh.flush()
            print(f"gemm {which:6s} {M}x{N}x{K}: default {cublas / t['a']:.2f}x cuBLAS, candidate "
                  f"{cublas / t['b']:.2f}x ({t['a'] / t['b']:.2f}x the default)", flush=True)
            del a, b, ref, c
            torch.cuda.empty_cache()


def study_menu(M: int, N: int, K: int) -> list:
    """Every schedule the GEMM search tries for the shape, plus tiles it does not: swapped tiles
    up to 256 rows, split 64/128-row tiles for mid M, swizzled variants, and widths that fill a
    wave where 128 and 256 leave one part-empty (160, 192; 192-row tiles)."""
    from dataclasses import replace

    from kernels import gemm as G

    out = list(G.candidates(M, N, K))
    if 128 < M <= 256:
        rows = 8 * G._ceil(M, 8)
        for bn, bk in ((128, 64), (64, 128), (128, 128)):
            out += G._tile(M, N, K, rows, bn, bk, 8, 128, True, 132)
    if M > 64:
        for bm, bn, want, threads in ((128, 160, 4, 256), (128, 192, 4, 256), (192, 128, 3, 384), (64, 192, 4, 128)):
            out += G._tile(M, N, K, bm, bn, 64, want, threads, False, 132, split=False)
    if 256 < M <= 2048:
        for bm, bn, want, threads in ((128, 128, 4, 256), (128, 256, 3, 256), (64, 128, 6, 128), (64, 256, 4, 128)):
            out += G._tile(M, N, K, bm, bn, 64, want, threads, False, 132)
    if M > 256:
        out += [replace(k, swizzle_panel=8) for k in out if k.algo == "tile" and k.swizzle_panel == 0]
    return list(dict.fromkeys(out + [G.heuristic_knobs(M, N, K), G.model_knobs(M, N, K)]))


def _precompile(job):
    """Compile one (M, N, K, knobs) into TileLang's kernel cache: None, or why it failed."""
    from kernels.gemm import plan_gemm

    M, N, K, knobs = job
    try:
        plan_gemm(M, N, K, "bf16", knobs)
        return None
    except Exception as exc:  # named in the CSV, the others go on
        return (str(exc).strip().splitlines() or [repr(exc)])[-1][:200]


def gemm_study(out: Path) -> None:
    """Every schedule of study_menu on the study's 30 shapes (one timing each): the data that
    model_knobs' tile throughputs come from (the unseen shapes stay unseen: the A/B checks on them)."""
    from concurrent.futures import ProcessPoolExecutor

    import torch

    from kernels.gemm import heuristic_knobs, model_knobs, plan_gemm

    jobs = [(M, N, K, k) for (M, N, K) in GEMM_STUDY for k in study_menu(M, N, K)]
    started = time.time()
    with ProcessPoolExecutor(16) as pool:
        errors = dict(zip(jobs, pool.map(_precompile, jobs, chunksize=1)))
    print(f"gemm-study: {len(jobs)} schedules compiled in {time.time() - started:.0f} s", flush=True)
    time_it = _timer()
    with open(out / "gemm_study.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["M", "N", "K", "knobs", "default", "model", "ms", "cublas_ms", "error"])
        for (M, N, K) in GEMM_STUDY:
            torch.manual_seed(0)
            a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
            b = torch.randn(K, N, device="cuda", dtype=torch.bfloat16)
            ref, c = a.float() @ b.float(), torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
            cublas = time_it(lambda: torch.matmul(a, b, out=c))
            best = None
            for knobs in study_menu(M, N, K):
                error, ms = errors.get((M, N, K, knobs)), ""
                if error is None:
                    plan = plan_gemm(M, N, K, "bf16", knobs)
                    c.fill_(float("nan"))
                    plan(a, b, c)
                    err = float((c.float() - ref).norm() / ref.norm())
                    if err < 1e-2:
                        ms = time_it(lambda p=plan: p(a, b, c))
                        best = min(best or ms, ms)
                    else:
                        error = f"wrong: relative error {err:.3g}"
                w.writerow([M, N, K, knobs, knobs == heuristic_knobs(M, N, K), knobs == model_knobs(M, N, K), ms,
                            cublas, error or ""])
            print(f"gemm-study {M}x{N}x{K}: best {cublas / best:.2f}x cuBLAS" if best else f"{M}x{N}x{K}: none ran",
                  flush=True)
            del a, b, ref, c
            torch.cuda.empty_cache()


def _manifest(out: Path, studies: list) -> Path:
    """The suite's run manifest (card, clocks, versions, commit, source hash) beside the CSV files,
    with the studies asked for: the provenance of every figure taken from them."""
    import json

    from repro.results import manifest as mf

    path = out / "manifest.json"
    path.write_text(json.dumps({**mf.collect(), "ab_studies": studies}, indent=2, sort_keys=True) + "\n")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("studies", nargs="+", choices=["mla", "mla-pad", "ws", "seesaw", "seesaw32", "seesaw32-sweep", "seesaw-auto", "pingpong", "combine", "lean", "auto", "pingpong-from", "fa-overlap", "sparse-bwd-atomics", "gemm", "gemm-study"])
    p.add_argument("--out", default="outputs/ab", help="folder for the CSV files (default: outputs/ab)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _manifest(out, args.studies)
    for study in args.studies:
        if study == "mla":
            mla(out, {}, "mla", base=REPLACED, cases=MLA_CASES + PAD_SWEEP)
        elif study == "mla-pad":
            mla(out, {"pad_rows": True, "balanced": False}, "mla_pad", base=REPLACED, cases=PAD_SWEEP)
        elif study == "ws":
            mla(out, {"kernel": "ws"}, "mla_ws")
        elif study == "seesaw":
            mla(out, {"kernel": "seesaw"}, "mla_seesaw")
        elif study == "seesaw32":
            mla(out, {"kernel": "seesaw", "block_N": 32, "stages": 4}, "mla_seesaw32")
        elif study == "seesaw32-sweep":
            mla(out, {"kernel": "seesaw", "block_N": 32, "stages": 4}, "mla_seesaw32_sweep", base={"kernel": "split"},
                cases=PAD_SWEEP + [dict(c, lengths="varied") for c in PAD_SWEEP])
        elif study == "seesaw-auto":
            mla(out, {}, "mla_seesaw_auto", base={"kernel": "split"}, cases=PAD_SWEEP + MLA_CASES)
        elif study == "lean":
            cases = MLA_CASES + LEAN_CASES
            mla(out, {"lean_tail": True, "staged_out": True}, "mla_lean", cases=cases)
            mla(out, {"lean_tail": True}, "mla_lean_tail", cases=LEAN_CASES)
            mla(out, {"staged_out": True}, "mla_staged_out", cases=LEAN_CASES)
        elif study == "combine":
            mla(out, {"combine": "wide"}, "mla_combine", cases=MLA_CASES + COMBINE_CASES)
        elif study == "pingpong":
            mla(out, {"kernel": "pingpong"}, "mla_pingpong", cases=[c for c in MLA_CASES + PINGPONG_CASES
                                                                     if c["h_q"] * c.get("s_q", 1) % 64 == 0])
        elif study == "auto":
            seen, cases = set(), []
            for c in MLA_CASES + PINGPONG_CASES + LEAN_CASES + COMBINE_CASES + AUTO_CASES + PAD_SWEEP + [
                    dict(c, lengths="varied") for c in PAD_SWEEP]:
                if str(c) not in seen:
                    seen.add(str(c))
                    cases.append(c)
            mla(out, {}, "mla_auto", base=PREVIOUS, cases=cases)
        elif study == "pingpong-from":
            cases = LEAN_CASES + [dict(c, dtype="bf16") for c in LEAN_CASES if c["h_q"] == 128] + PINGPONG_CASES + [
                dict(batch=96, h_q=128, seqlen=3000, lengths="varied"), dict(batch=128, h_q=64, seqlen=1536, lengths="equal"),
                dict(batch=128, h_q=64, s_q=2, seqlen=2048, lengths="varied")]
            for start in (32, 16):
                mla(out, {"pingpong_from": start}, f"mla_pingpong_from{start}", cases=cases)
        elif study == "fa-overlap":
            fa_overlap(out)
        elif study == "sparse-bwd-atomics":
            sparse_bwd_atomics(out)
        elif study == "gemm":
            gemm(out)
        else:
            gemm_study(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
