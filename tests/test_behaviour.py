"""The code reproduces the runs recorded in ``tests/data/behaviour.json``.

For every case of ``tests/behaviour.py`` (each method, pair score, selection
rule, KD loss and layout) and for the ``smoke`` preset. On a machine like the
one that recorded them (``behaviour.machine()``: CPU model, instruction sets,
jaxlib) the final parameters' sha256 and the last metrics (FLOP counts
included) must be identical, bit for bit. On another machine XLA:CPU rounds
differently in the last bits: there FLOP counts and steps must still be
identical, the other metrics within ``PORTABLE_RTOL``, the parameters' norm
within ``NORM_RTOL`` and each evaluation metric within one evaluation item.
The record's history, and how it is made, are in ``tests/behaviour.py``.
"""

import json
import os
import pathlib

import pytest
from behaviour import NORM_RTOL, PORTABLE_RTOL, cases, machine, run_case, smoke_record
from xla_flags import with_suite_flags

from aced.train.config import preset

RECORDED = json.loads((pathlib.Path(__file__).parent / "data" / "behaviour.json").read_text())
SAME_MACHINE = RECORDED["machine"] == machine()
EXACT = ("flops", "flops_cumulative", "step")  # integers in any rounding


def assert_reproduces(got: dict, want: dict, metrics: str, same_machine=SAME_MACHINE) -> None:
    if same_machine:
        assert got["params"] == want["params"]
        assert got[metrics] == want[metrics]
        return
    assert got["norm"] == pytest.approx(want["norm"], rel=NORM_RTOL)
    assert got[metrics].keys() == want[metrics].keys()
    for key, value in want[metrics].items():
        tolerance = 0 if key in EXACT else PORTABLE_RTOL
        assert got[metrics][key] == pytest.approx(value, rel=tolerance, abs=1e-6), key


@pytest.mark.parametrize("name", list(cases()))
def test_step_cases_are_unchanged(name):
    assert_reproduces(run_case(*cases()[name]), RECORDED["steps"][name], "metrics")


def test_smoke_preset_is_unchanged(tmp_path):
    want = RECORDED["smoke"]
    got = smoke_record(tmp_path, want)
    assert_reproduces(got, want, "last_metrics")
    # On another machine one near-tie among a task's items may flip.
    train = preset("smoke").train
    item = 0 if SAME_MACHINE else 1 / min(train.eval_per_task, train.eval_retrieval_size) + 1e-9
    for key, value in want["eval"].items():
        assert got["eval"][key] == pytest.approx(value, rel=0, abs=max(item, 1e-12)), key


def test_off_the_recording_machine_rounding_passes_and_a_change_fails():
    want = RECORDED["steps"]["aced_feature_l2_jest_dense"]
    metrics = {
        k: v if k in EXACT else v * (1 + PORTABLE_RTOL / 10) for k, v in want["metrics"].items()
    }
    rounded = {
        "params": "other bits",
        "norm": want["norm"] * (1 + NORM_RTOL / 10),
        "metrics": metrics,
    }
    assert_reproduces(rounded, want, "metrics", same_machine=False)
    with pytest.raises(AssertionError):
        assert_reproduces(rounded, want, "metrics", same_machine=True)
    for key, factor in (("loss/total", 1 + 10 * PORTABLE_RTOL), ("flops", 1 + 1e-9)):
        changed = {**rounded, "metrics": {**metrics, key: metrics[key] * factor}}
        with pytest.raises(AssertionError, match=key):
            assert_reproduces(changed, want, "metrics", same_machine=False)
    with pytest.raises(AssertionError):
        far = {**rounded, "norm": want["norm"] * (1 + 10 * NORM_RTOL)}
        assert_reproduces(far, want, "metrics", same_machine=False)


def test_the_suite_flags_are_set_once_in_every_process():
    """An xdist worker inherits the session's XLA_FLAGS and sets them again: each flag must
    appear once, or `machine()` differs from the record's and the bit-for-bit checks above
    silently fall back to the portable tolerances."""
    flags = os.environ["XLA_FLAGS"].split()
    assert len(flags) == len(set(flags))
    once = with_suite_flags("--xla_dump_to=x", 4)
    assert with_suite_flags(once, 4) == once
    assert once.split()[0] == "--xla_dump_to=x"
