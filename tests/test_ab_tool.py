"""tools/ab_candidates.py on the CPU: its cases are valid cases of the experiments, both sides of
every pair exist, and it takes its gate from the configs (the timing itself needs a GPU)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import ab_candidates as ab  # noqa: E402

from experiments import mla_decode  # noqa: E402
from kernels import gemm, mla_decode as tl_mla  # noqa: E402


def test_mla_cases_are_valid_and_the_candidates_are_knobs():
    for spec in ab.MLA_CASES + ab.PAD_SWEEP:
        mla_decode.validate_case({"grid": "ab", "dtype": "bf16", "s_q": 1, **spec})
    for candidate in ({"pad_rows": True, "balanced": False}, {"kernel": "ws"}, ab.REPLACED):
        assert tl_mla.Knobs(**candidate) != tl_mla.Knobs()


def test_gemm_pairs_differ_somewhere_and_unseen_shapes_are_unseen():
    assert not set(ab.GEMM_STUDY) & set(ab.GEMM_UNSEEN)
    differ = [s for s in ab.GEMM_STUDY + ab.GEMM_UNSEEN if gemm.heuristic_knobs(*s) != gemm.model_knobs(*s)]
    assert len(differ) > len(ab.GEMM_STUDY)
    assert any(gemm.heuristic_knobs(*s) != gemm.default_knobs(*s) for s in ab.GEMM_STUDY + ab.GEMM_UNSEEN)


def test_mla_precompile_builds_a_kernel_the_timed_pass_will_ask_for():
    knobs = tl_mla.Knobs(pad_rows=True)
    assert ab._precompile_mla((16, 2, "bf16", knobs)) is None
    assert tl_mla.compile_attention(16, 2, "bfloat16", tl_mla.D_QK ** -0.5, tl_mla.builder_args(knobs)) is not None


def test_gate_is_the_sweeps_gate():
    assert ab._tolerance("mla_decode", "bf16") == {"rel_l2": 3.0e-3, "max_abs_rel": 5.0e-2}
    assert ab._tolerance("mla_decode", "fp16")["rel_l2"] == 2.0e-3


def test_unknown_study_is_refused():
    with pytest.raises(SystemExit):
        ab.main(["flash"])


def test_study_menu_holds_both_defaults_and_the_wave_filling_tiles():
    for shape in [(129, 4096, 4096), (256, 10240, 8192), (8192, 8192, 8192), (3, 4096, 14336)]:
        menu = ab.study_menu(*shape)
        assert gemm.heuristic_knobs(*shape) in menu and gemm.model_knobs(*shape) in menu
        assert len(set(menu)) == len(menu)
    assert any(k.block_N == 160 for k in ab.study_menu(256, 10240, 8192))


def test_a_run_writes_the_suites_manifest_beside_its_csv_files(tmp_path):
    import json

    path = ab._manifest(tmp_path, ["gemm"])
    got = json.loads(path.read_text())
    assert got["ab_studies"] == ["gemm"] and got["torch"] and got["source_hash"] and "gpu" in got
