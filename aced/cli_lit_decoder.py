"""``aced lit-decoder``: the command-line side of `aced.train.lit_decoder`.

    aced lit-decoder --encoder RUN_OR_MODEL --out DIR [--steps N] [--seed N] [--beam N] ...

Trains a text decoder on the frozen image tower of RUN_OR_MODEL (a run
directory of ``aced train``, one of its checkpoints, or a model directory) on
the curated split's captioning and question-answering sequences, resumes from
``DIR/checkpoint`` when started again, then scores it on the eval split and
writes ``DIR/lit_decoder.json``.
"""

import argparse
import dataclasses

from aced.cli_common import remainder_command


def add_parser(commands) -> None:
    """Register ``aced lit-decoder`` (`parser` reads its arguments)."""
    remainder_command(
        commands,
        "lit-decoder",
        "train and score a captioning / VQA decoder on a frozen image tower",
        "--encoder RUN_OR_MODEL --out DIR ...",
    )


def parser() -> argparse.ArgumentParser:
    from aced.train.lit_decoder import LitConfig

    parser = argparse.ArgumentParser(
        prog="aced lit-decoder",
        description="LiT-Decoder: train a small text decoder by teacher forcing on the frozen "
        "image tower of an aced run (captioning and question answering on the curated split), "
        "then decode the eval split's tasks and score them (CIDEr-D, exact match, item and cell "
        "accuracy; exact match per question type). Run it again on the same --out to resume.",
    )
    parser.add_argument("--encoder", required=True, help="run directory, checkpoint or model")
    parser.add_argument("--out", required=True, help="directory to write (or to resume)")
    parser.add_argument("--vocab", help="a file of the decoder's words, one per line "
                        "(default: every word of the built-in scenes' tasks)")  # fmt: skip
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar")  # fmt: skip
    for field in dataclasses.fields(LitConfig):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default),
                            default=field.default, help=f"(default: {field.default})")  # fmt: skip
    return parser


def run(command: argparse.Namespace) -> int:
    import pathlib

    from aced.eval.lit_tasks import SPECIALS, DecoderVocab
    from aced.train.lit_decoder import RESULTS_FILE, LitConfig, format_results, train_lit_decoder

    args = parser().parse_args(command.args)
    config = LitConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(LitConfig)})
    vocab = None
    if args.vocab:
        words = pathlib.Path(args.vocab).read_text().split()
        vocab = DecoderVocab(tuple(dict.fromkeys(w for w in words if w not in SPECIALS)))
    results = train_lit_decoder(args.encoder, args.out, config, vocab=vocab,
                                progress=args.progress)  # fmt: skip
    print(format_results(results["scores"]))
    print(f"wrote {pathlib.Path(args.out) / RESULTS_FILE}")
    return 0
