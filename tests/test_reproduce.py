"""`aced reproduce`: the smoke study end to end, resumable, and the analysis it reports."""

import json
import pathlib
import sys

import pytest

from aced import cli

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "experiments"))

from analysis import flops_per_accuracy, flops_to_reach, interpolate, verdict  # noqa: E402
from reproduce import check_plan, planned, run_name  # noqa: E402
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


def run(kind, arm, seed, curve, reference_flops=0.0):
    final = curve[-1]
    return {
        "kind": kind,
        "arm": arm,
        "seed": seed,
        "curve": [{"flops": f, "average": a} for f, a in curve],
        "flops": final[0],
        "scores": {"average": final[1]},
        "reference_flops": reference_flops,
    }


def test_flops_per_accuracy_reads_iid_seeds_on_their_longer_runs():
    # IID's mean final average is 0.3; seed 1 ends below it and reaches it only on its
    # longer (equal-FLOP) run, at 25 FLOPs (halfway from 10 to 40); seed 0 at 10.
    summaries = [
        run("arm", "iid", 0, [(10, 0.4)]),
        run("arm", "iid", 1, [(10, 0.2)]),
        run("budget", "iid_budget", 1, [(10, 0.2), (40, 0.4)]),
        run("arm", "acid", 0, [(5, 0.1), (15, 0.5)], reference_flops=100.0),
    ]
    rows = {r["arm"]: r for r in flops_per_accuracy(summaries)}
    assert rows["acid"]["amortised"] == pytest.approx(10.0)  # halfway from 5 to 15
    assert rows["acid"]["included"] == pytest.approx(110.0)
    assert rows["acid"]["amortised_ratio"] == pytest.approx(10.0 / 17.5)  # IID: (10 + 25) / 2
    # IID's row: on each seed's longest curve, so its ratio is 1 (seed 1's own 300-step
    # curve never gets there; its equal-FLOP run does)
    assert rows["iid"]["amortised"] == pytest.approx(17.5) and rows["iid"]["amortised_ratio"] == 1
    # without the longer run no IID FLOPs to the target exist, so no ratio
    rows = {r["arm"]: r for r in flops_per_accuracy([summaries[0], summaries[1], summaries[3]])}
    assert rows["acid"]["amortised"] == pytest.approx(10.0)
    assert rows["acid"]["amortised_ratio"] is None


def test_equal_flops_reads_the_baseline_curve_or_bounds_past_its_end():
    from report import _equal_flops

    baseline = [run("budget", "iid_budget", 0, [(10, 0.2), (40, 0.4)])]
    # amortised: 25 FLOPs, where the baseline is halfway (0.3); included: 125, past its end
    arm = [run("arm", "acid", 0, [(25, 0.5)], reference_flops=100.0)]
    cell = _equal_flops(arm, baseline)
    assert cell == "amortised 20.0; included (<= 10.0 at the baseline's end)"
    assert _equal_flops(arm, []) == "amortised n/a; included n/a"


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
    # Selection diagnostics on every log step: precision for every method (IID's is the
    # base rate of a uniform draw), chunk supports only where a rule samples.
    for run in (iid, acid):
        assert [d["step"] for d in run["diagnostics"]] == [2, 4]
        for d in run["diagnostics"]:
            assert 0.0 <= d["select/precision"] <= 1.0 and 0.0 < d["select/base_rate"] <= 1.0
    assert not any(k.startswith("select/support/") for k in iid["diagnostics"][0])
    chunks = [k for k in acid["diagnostics"][0] if k.startswith("select/support/")]
    assert chunks == ["select/support/00", "select/support/01"]  # n_chunks=2
    # B = 32, chunks of 8: at most 32 and 24 candidates
    assert all(1.0 <= d[c] <= 32 - 8 * i for d in acid["diagnostics"] for i, c in enumerate(chunks))
    report = (results / "README.md").read_text()
    assert "| acid | " in report.split("## Selection diagnostics")[1].split("## The claims")[0]
    assert report.startswith("# Reproduction study `smoke`") and "| ACID beats IID |" in report
    for plot in ("flops_vs_average", "selection_precision", "selection_support"):
        assert (results / f"{plot}.png").is_file() and f"]({plot}.png)" in report
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


@pytest.mark.parametrize("name", list(STUDIES))
def test_every_run_of_every_study_has_a_valid_batch_geometry(name):
    # Checked before any run starts: a study must not stop at its 30th run on a shape error.
    check_plan(STUDIES[name], pathlib.Path("r"))  # what aced reproduce checks first
