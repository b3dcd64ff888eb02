"""``aced score``: the command-line side of `aced.eval.score_data`.

    aced score LEARNER --reference REF [data.key=value ...] --out scores.parquet \
        [--sheet sheet.png] [--by learnability] [--per-side 8] [--limit N] [--keep COLUMN]
"""

import argparse
import os
import pathlib

from aced.cli_common import remainder_command


def add_parser(commands) -> None:
    """Register ``aced score`` on the ``aced`` sub-command parser (`parser` reads its arguments)."""
    remainder_command(
        commands,
        "score",
        "per-example curation scores of a dataset, and a contact sheet",
        "LEARNER --reference REF ...",
    )


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aced score",
        description="Score every example of a dataset (data.*, default: the learner run's) with "
        "a learner and a reference: each model's own pair loss and every pair score; write "
        "parquet and a contact sheet of the highest- and lowest-scoring pairs.",
    )
    parser.add_argument("learner", help="run directory, checkpoint or model of the learner")
    parser.add_argument(
        "--reference", required=True, help="run directory or model of the reference"
    )
    parser.add_argument("--out", required=True, help="parquet file to write")
    parser.add_argument("--sheet", help="contact sheet PNG to write")
    parser.add_argument("--by", default="learnability", help="the pair score the sheet ranks by")
    parser.add_argument("--per-side", type=int, default=8, help="pairs per row of the sheet")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N examples")
    parser.add_argument("--keep", action="append", default=[], help="a data column to copy over")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per embedding call")
    parser.add_argument("overrides", nargs="*", metavar="data.key=value", help="the data to score")
    return parser


def run(command: argparse.Namespace) -> int:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aced.eval.score_data import contact_sheet, score_examples
    from aced.selection import PAIR_SCORES
    from aced.train.config import apply_overrides, preset
    from aced.train.inputs import DATA_SOURCES
    from aced.train.learners import load_learner

    args = parser().parse_intermixed_args(command.args)
    if [o for o in args.overrides if not o.startswith("data.")]:
        raise ValueError(f"only data.* fields apply here; got {args.overrides}")
    if args.by not in PAIR_SCORES:
        raise ValueError(f"--by {args.by!r}: choose a pair score of {', '.join(PAIR_SCORES)}")
    learner, learner_tokenizer, run_config = load_learner(args.learner)
    reference, reference_tokenizer, _ = load_learner(args.reference)
    data = apply_overrides(run_config or preset("aced"), args.overrides).data
    source = DATA_SOURCES[data.source](data)
    n = len(source) if args.limit is None else min(args.limit, len(source))
    image = learner.config.image
    loaded = source.load(np.arange(n), image.image_size, image.channels)
    keep = np.flatnonzero(loaded.ok)
    images, captions = loaded.images[keep], [loaded.captions[i] for i in keep]
    scores = score_examples(
        learner, learner_tokenizer, reference, reference_tokenizer, images, captions,
        batch_size=args.batch_size,
    )  # fmt: skip
    columns = {"index": keep, "caption": captions, **scores}
    columns |= {name: np.asarray(v)[keep] for name, v in loaded.extras.items()}
    for name in args.keep:
        if not hasattr(source, "dataset") or name not in source.dataset.column_names:
            raise ValueError(f"--keep {name}: the data has no column {name!r}")
        column = source.dataset[name]  # that column alone, no image read
        columns[name] = [column[int(i)] for i in keep]
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    pq.write_table(pa.table(columns), partial)
    os.replace(partial, out)  # never a half-written file at OUT
    by = scores[f"score/{args.by}"]
    print(f"scored {len(keep)} of {n} examples ({n - len(keep)} unreadable); wrote {out}")
    for name in [*loaded.extras, *args.keep]:  # how each value of a small column scores
        values = np.asarray(columns[name])
        if len(np.unique(values)) > 10:
            continue
        for value in np.unique(values):
            shown = str(value)
            if name == "quality":  # the built-in scenes' noise kinds
                from aced.data.scenes import QUALITY_NAMES

                shown = QUALITY_NAMES[int(value)]
            mean = by[values == value].mean()
            print(
                f"  {name} = {shown}: mean {args.by} {mean:+.3f} ({int((values == value).sum())})"
            )
    if args.sheet:
        sheet = contact_sheet(
            images, captions, by, args.sheet, per_side=args.per_side, title=args.by
        )
        print(f"wrote {sheet}")
    return 0
