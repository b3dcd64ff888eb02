"""The ``aced`` command: ``train``, ``eval``, ``reproduce``, ``convert``, ``tokenizer``,
``score``, ``embed``.

::

    aced train --preset aced step.selection.filter_ratio=0.5 train.steps=100
    aced train --help                   # every config field, its default and meaning
    aced eval runs/aced                 # evaluation table, and eval JSON beside the run
    aced reproduce --preset cpu         # the reproduction study (experiments/), resumable
    aced convert hf-siglip DIR OUT      # a transformers SiglipModel -> aced model files
    aced tokenizer build data.source=parquet data.path=DIR --out tok.json   # from your captions
    aced train --plugin my_kd.py --preset kd step.distill.loss=similarity_l1   # your own entry
    aced train --preset aced --coordinator HOST:1234 --num-processes 2 --process-id 0  # 2 hosts

Benchmarks and the paper's experiments are scripts: ``python benchmarks/<name>.py``,
``python experiments/<name>.py``.

Exit status: 0 on success, 1 on a failed run (divergence, unreadable
checkpoint, missing files), 2 on bad input (unknown key, wrong value), 130
when SIGINT / SIGTERM stopped training after saving a checkpoint.
"""

import argparse
import json
import logging
import pathlib
import sys
import textwrap
import types
import typing
from collections.abc import Sequence

from aced import cli_distributed, cli_embed, cli_lit_decoder, cli_score, cli_tokenizer
from aced.cli_common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PLUGIN_FLAG,
    PLUGIN_OPTIONS,
    SELF_PARSED,
    enable_compilation_cache,
    load_plugins,
    plugins_in,
)


def _kind(hint: object) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return " | ".join(map(str, typing.get_args(hint)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("none" if h is type(None) else _kind(h) for h in typing.get_args(hint))
    return getattr(hint, "__name__", str(hint))


def _fields_help(preset_name: str) -> str:
    from aced.train.config import PRESETS, config_fields, preset

    preset_name = preset_name if preset_name in PRESETS else "aced"
    lines = [f"presets (--preset NAME; the values below are those of --preset {preset_name}):"]
    lines += [f"  {name:<10} {about}" for name, (_, about) in PRESETS.items()]
    lines += ["", "config fields (override any with key=value; none for an empty optional):"]
    for key, (value, about, hint) in config_fields(preset(preset_name)).items():
        lines.append(f"  {key} = {'none' if value is None else json.dumps(value)}  [{_kind(hint)}]")
        lines += textwrap.wrap(about, width=88, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def _parser(*, fields_help: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aced", description="Active data curation as distillation (JEST, ACID, ACED) in JAX."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train (or resume) a run",
        description="Train a learner with IID, KD, ACID or ACED; resumes from the latest "
        "checkpoint in train.out_dir. Ctrl-C saves a checkpoint and stops.",
        # Only for --help: it imports the config tree.
        epilog=_fields_help(fields_help) if fields_help else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--preset", default="aced", help="starting configuration (default: aced)")
    train.add_argument(*PLUGIN_FLAG, **PLUGIN_OPTIONS)
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config fields to change")
    cli_distributed.add_arguments(train)

    evaluate = commands.add_parser("eval", help="evaluate a run, checkpoint or model directory")
    evaluate.add_argument(
        "path", help="run directory, <run>/checkpoints/<step>, or model directory"
    )
    evaluate.add_argument(
        "--out", help="JSON file to write (default: <path>/eval.json, or eval-<step>.json)"
    )
    evaluate.add_argument("--per-task", type=int, default=None, help="images per zero-shot task")
    evaluate.add_argument("--retrieval-size", type=int, default=None, help="retrieval pairs")
    evaluate.add_argument("--batch-size", type=int, default=500, help="rows per embedding call")
    evaluate.add_argument("--tasks", help="a task file (TOML / JSON) of your own datasets")
    evaluate.add_argument(*PLUGIN_FLAG, **PLUGIN_OPTIONS)
    cli_distributed.add_arguments(evaluate)

    reproduce = commands.add_parser(
        "reproduce",
        help="run the reproduction study, resumably",
        description="Run a reproduction study: every run an `aced train` run directory, "
        "finished runs skipped, each run's summary written as it finishes, then the report.",
    )
    reproduce.add_argument("--preset", default="smoke", help="smoke | cpu | full")
    reproduce.add_argument("--runs", help="parent of the run directories")
    reproduce.add_argument("--results", help="where the summaries and the report go")
    reproduce.add_argument("--plan", action="store_true", help="list the runs and stop")
    cli_distributed.add_arguments(reproduce)

    convert = commands.add_parser(
        "convert", help="convert an external checkpoint to aced model files"
    )
    convert.add_argument("format", choices=["hf-siglip"], help="source format")
    convert.add_argument("src", help="source directory (a transformers SiglipModel checkpoint)")
    convert.add_argument("out", help="aced model directory to write")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    cli_tokenizer.add_parser(commands)
    cli_score.add_parser(commands)
    cli_embed.add_parser(commands)
    cli_lit_decoder.add_parser(commands)
    return parser


def _train(args: argparse.Namespace) -> int:
    from aced.train.config import apply_overrides, preset
    from aced.train.evaluation import EVAL_FILE, build_eval_suite
    from aced.train.loop import train

    run = apply_overrides(preset(args.preset), args.overrides)
    result = train(run)
    if result["interrupted"]:
        print(
            f"interrupted at step {result['step']}; rerun the same command to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if not cli_distributed.is_main():
        return 0  # process 0 reports
    scores = {k.removeprefix("eval/"): v for k, v in result.items() if k.startswith("eval/")}
    reference = ""
    if result["reference_flops"] or not result["reference_flops_known"]:
        reference = (
            f" (+ {result['reference_flops']:.3e} that trained the reference)"
            if result["reference_flops_known"]
            else " (+ the reference's training, cost unknown)"
        )
    print(
        f"run {run.train.out_dir}: {result['step']} steps, "
        f"{result['flops_cumulative']:.3e} training FLOPs{reference}"
    )
    if scores:
        from aced.eval import format_table

        print(format_table(scores, None if run.train.eval_tasks else build_eval_suite(run)))
        print(f"wrote {pathlib.Path(run.train.out_dir) / EVAL_FILE}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from aced.eval import build_suite, format_table, write_json
    from aced.train.config import BUILTIN_IMAGE_SIZE
    from aced.train.evaluation import EVAL_FILE, EVAL_SUITE_SEED, run_evaluation
    from aced.train.learners import load_learner

    path = pathlib.Path(args.path)
    model, tokenizer, run = load_learner(path)
    step_dir = not path.is_dir() or path.name.isdigit()
    if args.tasks:  # your own datasets (aced.eval.user_tasks) instead of the built-in suite
        from aced.eval.user_tasks import load_tasks, run_tasks

        scores = run_tasks(model, tokenizer, load_tasks(args.tasks), batch_size=args.batch_size)
        if not cli_distributed.is_main():
            return 0  # every process evaluates alike; process 0 reports
        print(format_table(scores))
        name = f"eval_tasks-{path.name}.json" if step_dir else "eval_tasks.json"
        out = write_json(scores, args.out or (path.parent.parent if step_dir else path) / name)
        print(f"wrote {out}")
        return 0
    per_task = args.per_task or (run.train.eval_per_task if run else 200)
    retrieval = args.retrieval_size or (run.train.eval_retrieval_size if run else 500)
    image = model.config.image
    if image.image_size != BUILTIN_IMAGE_SIZE:
        raise ValueError(
            f"the model reads {image.image_size}px images; the evaluation suite is made of "
            f"{BUILTIN_IMAGE_SIZE}px "
            "built-in scenes, so only models trained on them can be evaluated here"
        )
    suite = build_suite(
        seed=EVAL_SUITE_SEED, per_task=per_task, retrieval_size=retrieval, channels=image.channels
    )
    scores = run_evaluation(model, tokenizer, suite, args.batch_size)
    if not cli_distributed.is_main():
        return 0
    print(format_table(scores, suite))
    default = path.parent.parent / f"eval-{path.name}.json" if step_dir else path / EVAL_FILE
    out = write_json(scores, args.out or default, suite=suite, metadata={"source": str(path)})
    print(f"wrote {out}")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    experiments = pathlib.Path(__file__).resolve().parents[1] / "experiments"
    if not (experiments / "reproduce.py").is_file():
        raise FileNotFoundError(
            f"{experiments / 'reproduce.py'} is missing: aced reproduce runs from a checkout of "
            "the aced repository (pip install -e .), not from an installed wheel"
        )
    sys.path.insert(0, str(experiments))
    from reproduce import main as reproduce_main

    argv = ["--preset", args.preset] + (["--plan"] if args.plan else [])
    argv += [f"--{k}={v}" for k in ("runs", "results") if (v := getattr(args, k))]
    return reproduce_main(argv)


def _convert(args: argparse.Namespace) -> int:
    try:
        from aced.convert import convert_hf_siglip
    except ImportError as error:
        raise RuntimeError(f"the SigLIP converter is unavailable ({error})") from error
    out = convert_hf_siglip(args.src, args.out, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aced`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        load_plugins(plugins_in(argv))
    except ValueError as error:
        print(f"aced: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    fields_help = None
    if argv[:1] == ["train"] and {"-h", "--help"} & set(argv):
        fields_help = argv[argv.index("--preset") + 1] if "--preset" in argv[:-1] else "aced"
    parser = _parser(fields_help=fields_help)
    if argv[:1] and argv[0] in SELF_PARSED:  # its module parses every option (they may lead)
        args = argparse.Namespace(command=argv[0], args=argv[1:])
    else:
        args = parser.parse_args(argv)
    # orbax's info lines would drown the progress bar.
    logging.getLogger("absl").setLevel(logging.ERROR)
    from aced.train.checkpoint import CheckpointError
    from aced.train.logs import TrainingDiverged

    handlers = {
        "train": _train,
        "eval": _eval,
        "reproduce": _reproduce,
        "convert": _convert,
        "tokenizer": cli_tokenizer.run,
        "score": cli_score.run,
        "embed": cli_embed.run,
        "lit-decoder": cli_lit_decoder.run,
    }
    try:
        enable_compilation_cache()  # before the first compile; docs/training.md
        if hasattr(args, "coordinator"):
            cli_distributed.join(args)
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print(f"aced {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ValueError as error:
        print(f"aced {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (
        TrainingDiverged,
        CheckpointError,
        FileNotFoundError,
        FileExistsError,
        RuntimeError,
    ) as error:
        cli_distributed.stop_if_lost(args.command, error)  # another process died?
        print(f"aced {args.command}: error: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
