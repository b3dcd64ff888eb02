"""Run a reproduction study, resumably, and summarise each finished run as it completes.

    aced reproduce --preset smoke|cpu|full [--runs DIR] [--results DIR] [--plan]

Every run of the study (`experiments/study.py`) is an ``aced train`` run
directory under ``--runs`` (default ``runs/reproduce/<preset>``). A run whose
summary is in ``--results`` with the same overrides is not run again (so a
study continues from what is committed, on any machine); a run that has
finished here (its ``eval.json`` is written) is only summarised; one that
was stopped resumes from its latest checkpoint. A reference is trained again
only when a run that still needs it finds no model (its training is
deterministic in its seed). After each run, its summary
(``<results>/runs/<run>.json``: the evaluation curve against FLOPs, the
final scores, the reference's own cost) is written, small enough to commit;
once every run is done, the report (``<results>/README.md``, the plots) is
rebuilt from the summaries alone (`experiments/report.py`). So a study can be
run in pieces, on different machines, from what is committed.
"""

import argparse
import json
import math
import pathlib
import subprocess
from typing import Any

import jax
from study import Arm, Study, study

from aced.train.config import apply_overrides, preset
from aced.train.evaluation import EVAL_FILE
from aced.train.logs import METRICS_FILE

HERE = pathlib.Path(__file__).resolve().parent


def run_name(arm: str, seed: int) -> str:
    return f"{arm}-s{seed}"


def planned(s: Study) -> list[tuple[Arm, int]]:
    """Every (arm, seed) of the study: headline arms for each seed, the rest for the first."""
    return [(arm, seed) for arm in s.arms for seed in (s.seeds if arm.headline else s.seeds[:1])]


def reference_overrides(s: Study, name: str, runs: pathlib.Path) -> list[str]:
    return [
        *s.references[name],
        "train.progress=false",
        f"train.out_dir={runs / 'references' / name}",
    ]


def arm_overrides(s: Study, arm: Arm, seed: int, runs: pathlib.Path) -> list[str]:
    out = [*s.common, *s.students[arm.student], *arm.overrides]
    out += [f"train.seed={seed}", f"data.seed={seed}", "train.progress=false"]
    if arm.reference is not None:
        out.append(f"reference.path={runs / 'references' / arm.reference / 'model'}")
    return [*out, f"train.out_dir={runs / run_name(arm.name, seed)}"]


def finished(run_dir: pathlib.Path) -> bool:
    return (run_dir / EVAL_FILE).is_file()


def train_run(preset_name: str, overrides: list[str]) -> pathlib.Path:
    """Train (or resume, or skip when finished) one run; returns its directory."""
    run = apply_overrides(preset(preset_name), overrides)
    out = pathlib.Path(run.train.out_dir)
    if finished(out):
        print(f"reproduce: {out} finished already", flush=True)
        return out
    from aced.train.loop import train

    result = train(run)
    if result["interrupted"]:
        raise KeyboardInterrupt(f"{out} stopped at step {result['step']}; rerun to resume")
    return out


def summarise(run_dir: pathlib.Path, **about: Any) -> dict[str, Any]:
    """The small JSON a study commits for one finished run, read from its own files."""
    records = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    curve = [
        {"step": r["step"], "flops": r["flops_cumulative"], "average": r["eval/average"]}
        for r in records
        if "eval/average" in r
    ]
    diagnostics = [
        {"step": r["step"], **{k: v for k, v in r.items() if k.startswith("select/")}}
        for r in records
        if any(k.startswith("select/") for k in r)
    ]
    evaluation = json.loads((run_dir / EVAL_FILE).read_text())
    config = json.loads((run_dir / "run_config.json").read_text())
    return {
        **about,
        # The reference's training as the run recorded it (aced.train.reference_training_flops).
        "reference_flops": evaluation["metadata"].get("reference_flops", 0.0),
        "run_dir": str(run_dir),
        "steps": curve[-1]["step"] if curve else None,
        "flops": curve[-1]["flops"] if curve else None,
        "scores": evaluation["scores"],
        "curve": curve,
        "diagnostics": diagnostics,
        "config": config,
    }


def write_summary(results: pathlib.Path, name: str, summary: dict[str, Any]) -> None:
    if jax.process_index():  # a multi-process study: process 0 writes
        return
    path = results / "runs" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)  # never a half-written summary


def key(overrides: list[str]) -> list[str]:
    """What identifies a run across machines: its overrides without the local paths."""
    return [o for o in overrides if not o.startswith(("train.out_dir=", "reference.path="))]


def committed(results: pathlib.Path, name: str, overrides: list[str]) -> dict | None:
    """The summary of this exact run when one is committed (then it is not run again)."""
    path = results / "runs" / f"{name}.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    if summary.get("key") != key(overrides):
        return None
    print(f"reproduce: {name} summarised already ({path})", flush=True)
    return summary


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def budget_steps(summaries: dict[str, dict], base: dict) -> int:
    """Steps of the `base` arm's run that spend the largest training FLOPs of the arms in
    `summaries` (its own student size's; reference amortised).

    The base arm's FLOPs are a fixed part (the reference cache pass, when it makes
    one) plus a constant per step, both read from its evaluation curve. Not the
    largest total with the reference included: at CPU scale training the
    reference costs tens of times a student run, and a run that long is beyond
    the study's time. Under the included reading the report shows a budget past
    the baseline's end as beyond it ("n/a"), never extrapolated.
    """
    most = max(s["flops"] for s in summaries.values())
    first, last = base["curve"][0], base["curve"][-1]
    if last["step"] > first["step"]:
        per_step = (last["flops"] - first["flops"]) / (last["step"] - first["step"])
    else:
        per_step = base["flops"] / base["steps"]
    fixed = base["flops"] - per_step * base["steps"]
    return math.ceil((most - fixed) / per_step)


def check_plan(s: Study, runs: pathlib.Path) -> None:
    """Every run's configuration and batch geometry, checked before the first run starts (a
    study must not stop at its thirtieth run on a shape error)."""
    for arm, seed in planned(s):
        run = apply_overrides(preset(arm.preset), arm_overrides(s, arm, seed, runs))
        try:
            run.step.check_shapes(run.data.super_batch_size, 1)
        except ValueError as error:
            raise ValueError(
                f"study {s.name!r}, run {run_name(arm.name, seed)}: {error}"
            ) from error


def reproduce(preset_name: str, runs: pathlib.Path, results: pathlib.Path, plan_only: bool = False):
    s = study(preset_name)
    todo = [("reference", ref, None) for ref in s.references]
    todo += [("arm", arm, seed) for arm, seed in planned(s)]
    if plan_only:
        for kind, item, seed in todo:
            print(kind, item if kind == "reference" else run_name(item.name, seed))
        for base in s.budget_arms:
            print(f"budget {base}_budget (each seed, for the largest FLOPs of any arm)")
        return
    commit = git_commit()
    check_plan(s, runs)

    def reference(ref: str, need_model: bool) -> None:
        """Summarise the reference; train it (deterministic in its seed) when the model is
        needed and missing here, or when no summary of it is committed."""
        overrides = reference_overrides(s, ref, runs)
        done = committed(results, f"reference-{ref}", overrides)
        model = runs / "references" / ref / "model"
        if done is None or (need_model and not model.is_dir()):
            out = train_run("reference", overrides)
            done = summarise(out, kind="reference", name=ref, commit=commit, key=key(overrides))
            write_summary(results, f"reference-{ref}", done)

    for ref in s.references:
        reference(ref, need_model=False)

    def run(kind: str, arm: Arm, seed: int, overrides: list[str]) -> dict:
        """The committed summary of this run, or train it (its reference first) and write one."""
        name = run_name(arm.name, seed)
        summary = committed(results, name, overrides)
        if summary is None:
            if arm.reference:
                reference(arm.reference, need_model=True)
            out = train_run(arm.preset, overrides)
            summary = summarise(
                out,
                kind=kind,
                arm=arm.name,
                seed=seed,
                student=arm.student,
                reference=arm.reference,
                command=f"aced train --preset {arm.preset} " + " ".join(overrides),
                commit=commit,
                key=key(overrides),
            )
            write_summary(results, name, summary)
        return summary

    summaries = {
        run_name(arm.name, seed): run("arm", arm, seed, arm_overrides(s, arm, seed, runs))
        for arm, seed in planned(s)
    }
    # The equal-FLOP baselines: per seed, a budget arm run as long as the most expensive arm.
    for base_name in s.budget_arms:
        base_arm = s.arm(base_name)
        for seed in s.seeds:
            base = summaries[run_name(base_name, seed)]
            arm = Arm(
                f"{base_name}_budget",
                base_arm.preset,
                base_arm.overrides,
                base_arm.reference,
                base_arm.student,
            )
            overrides = arm_overrides(s, arm, seed, runs)
            # the arms this baseline is compared with: those of its student size
            peers = {k: v for k, v in summaries.items() if v["student"] == base_arm.student}
            steps = budget_steps(peers, base)
            overrides += [f"train.steps={steps}", f"train.eval_every={s.budget_eval_every}"]
            check = apply_overrides(preset(arm.preset), overrides)
            if check.step.optim.decay_steps:
                raise ValueError(
                    "an equal-FLOP baseline needs a constant learning rate after warm-up"
                )
            run("budget", arm, seed, overrides)
    from report import write_report

    if jax.process_index() == 0:
        write_report(preset_name, results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aced reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="smoke", help="smoke | cpu | full")
    parser.add_argument("--runs", help="parent of the run directories")
    parser.add_argument("--results", help="where the summaries and report go")
    parser.add_argument("--plan", action="store_true", help="list the runs and stop")
    args = parser.parse_args(argv)
    runs = pathlib.Path(args.runs or f"runs/reproduce/{args.preset}")
    results = pathlib.Path(args.results or HERE / "results" / args.preset)
    reproduce(args.preset, runs, results, plan_only=args.plan)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
