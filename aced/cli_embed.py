"""``aced embed``: the command-line side of `aced.train.embedding_cache`.

    aced embed REFERENCE [data.key=value ...] --out DIR [--shard-size N] [--batch-size N]

Then ``aced train ... step.reference_embeddings=cached reference.path=REFERENCE
reference.embeddings=DIR`` reads the embeddings instead of computing them.
"""

import argparse

from aced import cli_distributed
from aced.cli_common import remainder_command


def add_parser(commands) -> None:
    """Register ``aced embed`` on the ``aced`` sub-command parser (`parser` reads its arguments)."""
    remainder_command(
        commands,
        "embed",
        "a frozen reference's embeddings of a whole dataset, in resumable shards",
        "REFERENCE --out DIR ...",
    )


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aced embed",
        description="Embed every example of a dataset (data.*, default: the aced preset's "
        "training data) with a frozen reference, at the reference's own image size and with "
        "its own tokenizer; write safetensors shards with example ids and a manifest (the "
        "model's checksum, the preprocessing, a fingerprint of the data). Run it again on the "
        "same --out to resume after a kill. Train with reference.embeddings=DIR.",
    )
    parser.add_argument("reference", help="run directory, checkpoint or model of the reference")
    parser.add_argument("--out", required=True, help="directory to write (or to resume)")
    parser.add_argument("--shard-size", type=int, default=8192, help="examples per shard")
    parser.add_argument("--batch-size", type=int, default=512, help="examples per model call")
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
    parser.add_argument("overrides", nargs="*", metavar="data.key=value", help="the data to embed")
    cli_distributed.add_arguments(parser)
    return parser


def run(command: argparse.Namespace) -> int:
    import jax

    from aced.train.config import apply_overrides, preset
    from aced.train.embedding_cache import write_embeddings
    from aced.train.inputs import DATA_SOURCES
    from aced.train.learners import load_learner
    from aced.train.reference import reference_tokenizer
    from aced.train.sharding import default_mesh

    args = parser().parse_intermixed_args(command.args)
    if [o for o in args.overrides if not o.startswith("data.")]:
        raise ValueError(f"only data.* fields apply here; got {args.overrides}")
    cli_distributed.join(args)
    for name in ("shard_size", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    reference, tokenizer, _ = load_learner(args.reference)
    tokenizer = reference_tokenizer(reference, args.reference, tokenizer)
    data = apply_overrides(preset("aced"), args.overrides).data
    source = DATA_SOURCES[data.source](data)
    manifest = write_embeddings(
        args.out, reference, source, tokenizer, mesh=default_mesh(), shard_size=args.shard_size,
        batch_size=args.batch_size, progress=args.progress, origin=args.reference,
    )  # fmt: skip
    if jax.process_index():
        return 0  # process 0 reports
    print(
        f"wrote {args.out}: {manifest['num_examples']} examples x {manifest['embed_dim']} "
        f"(image and text) in {len(manifest['shards'])} shard(s); model {manifest['model'][:12]}, "
        f"{manifest['flops']:.3e} FLOPs"
    )
    print(
        f"use it with: aced train ... step.reference_embeddings=cached "
        f"reference.path={args.reference} reference.embeddings={args.out}"
    )
    return 0
