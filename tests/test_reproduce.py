"""`aced reproduce`: the smoke study end to end, resumable, and the analysis it reports."""

import json
import pathlib
import sys

import pytest

from aced import cli

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "experiments"))

from analysis import flops_to_reach, interpolate, verdict  # noqa: E402
from reproduce import planned, run_name  # noqa: E402
from study import STUDIES  # noqa: E402

CURVE = [
    {"flops": 10.0, "average": 0.2},
    {"flops": 20.0, "average": 0.4},
    {"flops": 40.0, "average": 0.3},
]


def test_interpolation_and_flops_to_reach_known_values():
    assert interpolate(CURVE, 15.0) == pytest.approx(0.3)
    assert interpolate(CURVE, 30.0) == pytest.approx(0.35)
    assert interpolate(CURVE, 5.0) is None and interpolate(CURVE, 41.0) is None
    assert flops_to_reach(CURVE, 0.3) == pytest.approx(15.0)
    assert flops_to_reach(CURVE, 0.3, offset=100.0) == pytest.approx(115.0)
    assert flops_to_reach(CURVE, 0.2) == 10.0
    assert flops_to_reach(CURVE, 0.5) is None


def test_verdict_weighs_the_gap_against_the_seed_spread():
    assert verdict([0.5, 0.52, 0.54], [0.3, 0.31, 0.32])[0] == "yes"
    assert verdict([0.3, 0.31, 0.32], [0.5, 0.52, 0.54])[0] == "no"
    answer, gap, spread = verdict([0.40, 0.50, 0.60], [0.44, 0.45, 0.46])
    assert answer == "unclear" and gap == pytest.approx(0.05) and spread == pytest.approx(0.1)


def test_smoke_study_end_to_end_and_resumable(tmp_path, capsys):
    runs, results = tmp_path / "runs", tmp_path / "results"
    argv = ["reproduce", "--preset", "smoke", f"--runs={runs}", f"--results={results}"]
    assert cli.main(argv) == 0
    study = STUDIES["smoke"]
    names = [run_name(a.name, s) for a, s in planned(study)]
    names += [f"reference-{r}" for r in study.references]
    names += [run_name("iid_budget", s) for s in study.seeds]
    summaries = {p.stem: json.loads(p.read_text()) for p in (results / "runs").glob("*.json")}
    assert set(summaries) == set(names)
    iid, acid = summaries["iid-s0"], summaries["acid-s0"]
    reference = summaries["reference-ref"]
    assert acid["reference_flops"] == reference["flops"] > 0 and iid["reference_flops"] == 0
    assert acid["flops"] > iid["flops"]  # scoring costs FLOPs
    # The equal-FLOP baseline's first steps are exactly the equal-step IID run (constant
    # learning rate after warm-up, same seed), and it spends the most training FLOPs of any arm.
    budget = summaries["iid_budget-s0"]
    at_iid_end = next(p for p in budget["curve"] if p["step"] == iid["steps"])
    assert at_iid_end["average"] == iid["scores"]["average"]
    assert at_iid_end["flops"] == iid["flops"]
    most = max(s["flops"] for s in summaries.values() if s["kind"] == "arm")
    assert budget["flops"] >= most > budget["flops"] - budget["flops"] / budget["steps"]
    report = (results / "README.md").read_text()
    assert "| ACID beats IID |" in report and (results / "flops_vs_average.png").is_file()
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("eval.json")}
    capsys.readouterr()
    # A rerun on a machine without the run directories trains nothing: the summaries are there.
    argv[3] = f"--runs={tmp_path / 'elsewhere'}"
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.count("summarised already") == len(names)
    assert not (tmp_path / "elsewhere").exists()
    assert before == {p: p.stat().st_mtime_ns for p in runs.rglob("eval.json")}


def test_unknown_study_is_named():
    assert cli.main(["reproduce", "--preset", "huge", "--plan"]) == 2
