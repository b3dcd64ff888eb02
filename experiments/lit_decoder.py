"""LiT-Decoder on the reproduction study's encoders: is ACED's image tower the best one to
decode from?

    python experiments/lit_decoder.py [--preset cpu] [--runs DIR] [--results DIR]

The paper's claim (ACED, arXiv 2411.18674, LiT-Decoder): frozen ACED vision
encoders are better encoders for captioning and VQA decoders than those of the
baselines, larger ones included. Here: the image towers of the study's IID, KD,
ACID and ACED students (seed 0 of each headline arm) and of the reference that
curated and taught them, each frozen under the same decoder (`LIT`: equal
decoder budgets), 2 decoder seeds each, scored on the eval split's captioning
and question-answering tasks (`aced.eval.lit_tasks`).

The encoders are the study's run directories under ``--runs`` (default
``runs/reproduce/<preset>``); one that is missing there is trained first with
the study's own command (`experiments/reproduce.py`). Each finished decoder
run's summary goes to ``<results>/runs/<encoder>-s<seed>.json`` as it
completes (a summary present with the same settings is not run again), and the
table to ``<results>/README.md``, rebuilt from the summaries alone.
"""

import argparse
import dataclasses
import json
import pathlib
import statistics
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from reproduce import arm_overrides, git_commit, reference_overrides, train_run  # noqa: E402
from study import study  # noqa: E402

from aced.train.config.lit import LitConfig  # noqa: E402
from aced.train.evaluation import EVAL_FILE  # noqa: E402

ARMS = ("iid", "kd", "acid", "aced")
SEEDS = (0, 1)
# 600 steps left the first encoder's decoder (IID's, seed 0) at chance on the presence
# questions (48.4 %), so every decoder gets 1500, fixed before any other encoder was decoded.
LIT = LitConfig(steps=1500, batch_size=64, width=128, depth=2, mlp_dim=512, num_heads=4,
                train_scenes=4096, eval_scenes=256, checkpoint_every=500)  # fmt: skip
HEADLINE = ("caption/cider", "vqa/exact_match")
COLUMNS = (
    ("caption/cider", "CIDEr-D"),
    ("caption/item_accuracy", "items right"),
    ("caption/cell_accuracy", "cells right"),
    ("caption/exact_match", "caption EM"),
    ("vqa/exact_match", "VQA EM"),
    ("vqa/exact_match/what_at", "what at"),
    ("vqa/exact_match/count", "count"),
    ("vqa/exact_match/presence", "presence"),
)


def encoders(preset_name: str, runs: pathlib.Path) -> dict[str, pathlib.Path]:
    """name -> run directory of each encoder, trained here first when missing."""
    s = study(preset_name)
    out = {}
    for name in ARMS:
        arm = s.arm(name)
        if arm.reference:
            out.setdefault(
                "reference", train_run("reference", reference_overrides(s, arm.reference, runs))
            )
        out[name] = train_run(arm.preset, arm_overrides(s, arm, 0, runs))
    return out


def summary_path(results: pathlib.Path, encoder: str, seed: int) -> pathlib.Path:
    return results / "runs" / f"{encoder}-s{seed}.json"


def run_decoders(preset_name: str, runs: pathlib.Path, results: pathlib.Path) -> None:
    from aced.train.lit_decoder import train_lit_decoder

    commit = git_commit()
    for encoder, run_dir in encoders(preset_name, runs).items():
        for seed in SEEDS:
            config = dataclasses.replace(LIT, seed=seed)
            path = summary_path(results, encoder, seed)
            if path.is_file() and json.loads(path.read_text())["config"] == dataclasses.asdict(
                config
            ):
                print(f"lit-decoder: {path} done already", flush=True)
                continue
            out = runs / "lit_decoder" / f"{encoder}-s{seed}"
            result = train_lit_decoder(run_dir, out, config, progress=False)
            zero_shot = json.loads((run_dir / EVAL_FILE).read_text())["scores"]["average"]
            summary = {**result, "encoder": encoder, "encoder_run": str(run_dir), "seed": seed,
                       "encoder_zero_shot_average": zero_shot, "commit": commit}  # fmt: skip
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
            tmp.replace(path)
            print(f"lit-decoder: wrote {path}", flush=True)


def report(preset_name: str, results: pathlib.Path) -> str:
    """The table of the committed summaries: mean and half-range over decoder seeds."""
    rows, zero_shot = {}, {}
    for path in sorted((results / "runs").glob("*.json")):
        summary = json.loads(path.read_text())
        encoder = path.stem.rsplit("-s", 1)[0]  # <encoder>-s<seed>.json
        rows.setdefault(encoder, []).append(summary["scores"])
        zero_shot[encoder] = summary["encoder_zero_shot_average"]
    order = [e for e in ("reference", *ARMS) if e in rows]
    head = "| encoder | its zero-shot average (study's summary) | "
    head += " | ".join(label for _, label in COLUMNS) + " |"
    lines = [head, "|---" * (len(COLUMNS) + 2) + "|"]
    study_runs = HERE / "results" / preset_name / "runs"
    for encoder in order:
        cells = []
        for key, _ in COLUMNS:
            values = [scores[key] for scores in rows[encoder]]
            spread = (max(values) - min(values)) / 2
            cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f}")
        reference = study(preset_name).arm(ARMS[-1]).reference
        name = f"reference-{reference}" if encoder == "reference" else f"{encoder}-s0"
        committed = json.loads((study_runs / f"{name}.json").read_text())["scores"]["average"]
        lines.append(f"| {encoder} ({len(rows[encoder])} seeds) | {zero_shot[encoder]:.3f} "
                     f"({committed:.3f}) | " + " | ".join(cells) + " |")  # fmt: skip
    students = [e for e in ARMS if e in rows]
    verdict = ""
    if len(students) == len(ARMS):

        def mean(e, key):
            return statistics.mean(scores[key] for scores in rows[e])

        best = {key: max(order, key=lambda e: mean(e, key)) for key, _ in COLUMNS}
        best_student = {key: max(students, key=lambda e: mean(e, key)) for key, _ in COLUMNS}
        wins = sum(best[key] == "aced" for key, _ in COLUMNS)
        answer = "yes" if all(best[k] == "aced" for k in HEADLINE) else "no"
        verdict = (
            f"\n**Is ACED's frozen encoder the best one for the decoder?** {answer} "
            f"(the rule, fixed before ACED's encoder was decoded: yes when ACED's mean is the highest of all "
            f"encoders, the larger reference included, on both CIDEr-D and VQA exact match). "
            f"Best per column: {', '.join(f'{label}: {best[k]}' for k, label in COLUMNS)} "
            f"(ACED best on {wins} of {len(COLUMNS)}); among the students alone: "
            f"{', '.join(f'{label}: {best_student[k]}' for k, label in COLUMNS)}.\n"
        )
    text = (
        f"# LiT-Decoder on the `{preset_name}` study's encoders\n\n"
        f"`python experiments/lit_decoder.py --preset {preset_name}` (summaries in `runs/`, "
        "this table rebuilt from them by `python experiments/lit_decoder.py --report`).\n\n"
        f"Decoder: {dataclasses.asdict(LIT)}; mean ± half the range over decoder seeds "
        f"{list(SEEDS)}; eval split: {LIT.eval_scenes} scenes, one caption and three "
        "questions each. The encoders are the study's seed-0 run directories, trained again "
        "here with the study's commands (models are not committed) at the commit each summary "
        "names; their zero-shot suite average is given next to the one in the study's committed "
        "summary, made at an earlier commit (the code's arithmetic has changed since, and these "
        "single runs are as noisy as the study's seed spread).\n\n"
        + "\n".join(lines)
        + "\n"
        + verdict
    )
    (results / "README.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", help="the study whose encoders to compare")
    parser.add_argument("--runs", help="parent of the study's run directories")
    parser.add_argument("--results", help="where the summaries and the table go")
    parser.add_argument("--report", action="store_true", help="only rebuild the table")
    args = parser.parse_args(argv)
    runs = pathlib.Path(args.runs or f"runs/reproduce/{args.preset}")
    results = pathlib.Path(args.results or HERE / "results" / "lit_decoder" / args.preset)
    if not args.report:
        run_decoders(args.preset, runs, results)
    print(report(args.preset, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
