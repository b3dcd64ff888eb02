"""``aced tokenizer build``: the command-line side of `aced.data.tokenizer_build`."""

import argparse

from aced.cli_common import remainder_command

DESCRIPTION = (
    "Train a word-level or BPE tokenizer on the captions named by data.* (the fields of aced "
    "train), plus optional extra texts, and write tokenizer.json."
)


def add_parser(commands) -> None:
    """Register ``aced tokenizer`` on the ``aced`` sub-command parser (`parser` reads its arguments)."""
    remainder_command(
        commands,
        "tokenizer",
        "build a tokenizer.json from a dataset's captions",
        "build [options] [data.key=value]",
    )


def parser() -> argparse.ArgumentParser:
    """The parser of ``aced tokenizer build ...``."""
    parser = argparse.ArgumentParser(prog="aced tokenizer", description=DESCRIPTION)
    parser.add_argument("action", choices=["build"], help="what to do")
    parser.add_argument("--out", required=True, help="tokenizer.json to write, or a directory")
    parser.add_argument("--kind", choices=["word", "bpe"], default="word")
    parser.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary size")
    parser.add_argument("--max-len", type=int, default=None, help="L (default: every caption)")
    parser.add_argument("--extra-texts", action="append", default=[], help="file, a text a line")
    parser.add_argument("--class-names", help="file of class names, one a line")
    parser.add_argument("--templates", help="file of prompt templates with {}, one a line")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "overrides", nargs="*", metavar="data.key=value", help="the data fields of aced train"
    )
    return parser


def run(command: argparse.Namespace) -> int:
    args = parser().parse_intermixed_args(command.args)
    from aced.data.tokenizer_build import build, caption_texts, prompt_texts
    from aced.eval.user_tasks import read_lines
    from aced.train.config import apply_overrides, preset
    from aced.train.inputs import DATA_SOURCES

    other = [o for o in args.overrides if not o.startswith("data.")]
    if other:
        raise ValueError(f"only data.* fields apply here; got {other}")
    if (args.class_names is None) != (args.templates is None):
        raise ValueError("--class-names and --templates go together; give both or neither")
    data = apply_overrides(preset("aced"), args.overrides).data
    captions = caption_texts(DATA_SOURCES[data.source](data))  # no batch: any size will do

    def lines(path: str, what: str) -> list[str]:
        return read_lines(path, what, allow_empty=True)

    extra = [t for path in args.extra_texts for t in lines(path, "--extra-texts")]
    if args.class_names:
        extra += prompt_texts(
            lines(args.class_names, "--class-names"), lines(args.templates, "--templates")
        )
    done = build(
        captions,
        args.out,
        kind=args.kind,
        vocab_size=args.vocab_size,
        max_len=args.max_len,
        extra_texts=extra,
        progress=not args.no_progress,
    )
    print(
        f"wrote {done['path']}: {args.kind}, vocabulary {done['vocab_size']}, "
        f"{len(captions)} captions (+ {len(extra)} extra texts)\n"
        f"tokens per caption (<eos> included): 99 % of captions fit in {done['p99']}, "
        f"all in {done['max']}; padded to L = {done['max_len']}\n"
        f"use it with: aced train data.tokenizer={done['path']} model.max_len={done['max_len']}"
    )
    return 0
