"""Run manifests are checked against their schema on read and on write (the reliability issue's item 6)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro.results import manifest as mf
from repro.results.store import StoreError

ROOT = Path(__file__).resolve().parents[1]
RUN = "20261201T000000-abcd"
GOOD = {"timestamp": "2026-12-01T00:00:00+00:00", "gpu": {"name": "NVIDIA H100", "count": 1},
        "gpu_state": [{"driver": "580.1", "clock_sm_mhz": "1980"}], "torch": "2.11.0", "cuda": "13.0",
        "git_dirty": False, "gate": {"correctness_trials": 3, "key": "5d0b2a4ac038",
                                     "tolerance": {"fp16": {"rel_l2": 0.002, "max_abs_rel": 0.01}}},
        "sweep": {"experiment": "gemm", "wall_s": 12.5, "rows": 4, "cases": 2}}


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / f"env-{RUN}.json"
    path.write_text(text)
    return path


def test_a_good_manifest_and_the_committed_ones_read(tmp_path):
    assert mf.read_manifest(_write(tmp_path, json.dumps(GOOD))) == GOOD
    for folder in [p for p in (ROOT / "results").iterdir() if p.is_dir()] + [ROOT / "tests/fixtures/results/h100"]:
        mf.read_manifests(folder)  # raises on anything the schema refuses


@pytest.mark.parametrize("data, says", [
    ({"junk": {"a": [1, 2, 3]}}, "no `timestamp`"),  # any JSON object used to pass
    ({**GOOD, "junk": 1}, "unknown key(s) 'junk'"),
    ({**GOOD, "timestamp": "yesterday"}, "not an ISO 8601 time"),
    ({**GOOD, "gpu": "H100"}, "`gpu` must be object"),
    ({**GOOD, "gpu_state": ["580.1"]}, "`gpu_state` must be a list of objects"),
    ({**GOOD, "git_dirty": "no"}, "`git_dirty` must be true/false or null"),
    ({**GOOD, "gate": {"correctness_trials": 0, "key": "k", "tolerance": {"fp16": {"rel_l2": -1}}}},
     "gate.correctness_trials"),
    ({**GOOD, "sweep": {"experiment": "gemm", "wall_s": -3}}, "`sweep.wall_s` is -3"),
    ({**GOOD, "torch": "x" * 5000}, "5000 characters long"),
    ({**GOOD, "gpu": {str(i): i for i in range(600)}}, "holds 600 entries"),
])
def test_a_manifest_outside_the_schema_is_refused(tmp_path, data, says):
    path = _write(tmp_path, json.dumps(data))
    with pytest.raises(StoreError, match="move it aside") as err:
        mf.read_manifest(path)
    assert says in str(err.value) and str(path) in str(err.value)
    with pytest.raises(StoreError, match="move it aside"):
        mf.read_manifests(tmp_path)  # what the report's loader calls
    assert says in "; ".join(mf.manifest_problems(data))


@pytest.mark.parametrize("text, says", [
    ('{"timestamp": "2026-12-01T00:00:00", "sweep": {"experiment": "gemm", "wall_s": NaN}}', "NaN is not a number"),
    ('{"timestamp": "2026-12-01T00:00:00", "sweep": {"experiment": "gemm", "wall_s": Infinity}}', "Infinity"),
    ('{"timestamp": "2026-12-01T00:00:00", "gpu": {"memory_gib": 1e999}}', "`manifest.gpu.memory_gib` is inf"),
])
def test_not_a_number_anywhere_is_refused(tmp_path, text, says):
    with pytest.raises(StoreError) as err:
        mf.read_manifest(_write(tmp_path, text))
    assert says in str(err.value)


def test_an_oversized_manifest_is_refused_before_parsing(tmp_path):
    path = _write(tmp_path, json.dumps({**GOOD, "torch": " " * 10}) + " " * (mf.MAX_BYTES + 1))
    with pytest.raises(StoreError, match="a run manifest is at most"):
        mf.read_manifest(path)


def test_check_manifest_raises_one_clear_error_and_write_refuses_what_would_not_read_back(tmp_path):
    assert mf.check_manifest(GOOD) is GOOD
    with pytest.raises(StoreError, match=r"no `timestamp`.*move it aside"):
        mf.check_manifest({"gpu": {}}, "somewhere.json")
    with pytest.raises(StoreError, match="is nan"):
        mf.write({**GOOD, "sweep": {"experiment": "gemm", "wall_s": float("nan")}}, tmp_path, RUN)
    assert not list(tmp_path.iterdir())
    mf.write(GOOD, tmp_path, RUN)
    assert mf.read_manifests(tmp_path) == {RUN: GOOD}
