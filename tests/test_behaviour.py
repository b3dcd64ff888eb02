"""The code reproduces, bit for bit on CPU, the runs recorded in ``tests/data/behaviour.json``.

For every case of ``tests/behaviour.py`` (each method, pair score, selection
rule, KD loss and layout) and for the ``smoke`` preset: the final parameters'
sha256 and the last metrics (FLOP counts included) must be identical. The
record's history, and how it is made, are in ``tests/behaviour.py``.
"""

import json
import pathlib

import pytest
from behaviour import cases, run_case, smoke_record

RECORDED = json.loads((pathlib.Path(__file__).parent / "data" / "behaviour.json").read_text())


@pytest.mark.parametrize("name", list(cases()))
def test_step_cases_are_bitwise_unchanged(name):
    got, want = run_case(*cases()[name]), RECORDED["steps"][name]
    assert got["params"] == want["params"]
    assert got["metrics"] == want["metrics"]


def test_smoke_preset_is_bitwise_unchanged(tmp_path):
    want = RECORDED["smoke"]
    got = smoke_record(tmp_path, want)
    assert got["params"] == want["params"]
    for key, value in want["last_metrics"].items():
        assert got["last_metrics"][key] == value, key
    for key, value in want["eval"].items():
        assert got["eval"][key] == pytest.approx(value, rel=0, abs=1e-12), key
