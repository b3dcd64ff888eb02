"""``python -m aced.data``: build the built-in splits and print what they hold.

Prints, per split, its size, build time (best of `--repeat` builds, the idx
files already in memory), quality tally, distinct captions and caption
lengths in tokens, then a few captions. The figures of ``docs/data.md`` come
from this command.
"""

import argparse
import collections
import time

import numpy as np

from aced.data.fashion_mnist import load_fashion_mnist
from aced.data.scenes import QUALITY_NAMES, SceneConfig, curated_split, eval_split, web_split
from aced.data.tokenize import builtin_tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aced.data", description=__doc__)
    parser.add_argument("--curated", type=int, default=5000, help="curated scenes")
    parser.add_argument("--web", type=int, default=20000, help="web scenes")
    parser.add_argument("--eval", type=int, default=2000, help="eval scenes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="builds timed per split")
    parser.add_argument("--examples", type=int, default=4, help="captions printed per split")
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST idx directory")
    args = parser.parse_args(argv)

    config = SceneConfig()
    tokenizer = builtin_tokenizer(config)
    start = time.perf_counter()
    load_fashion_mnist("train", args.data_dir)
    load_fashion_mnist("test", args.data_dir)
    print(f"read Fashion-MNIST idx files: {time.perf_counter() - start:.2f} s")
    print(
        f"scenes: {config.rows}x{config.cols} grid of {config.cell}px cells "
        f"({config.image_size[0]}x{config.image_size[1]}), {config.min_items}-{config.max_items} "
        f"items; tokenizer: {tokenizer.vocab_size} tokens, max_len {tokenizer.max_len}"
    )
    builders = (("curated", curated_split, args.curated), ("web", web_split, args.web))
    for name, build, n in builders + (("eval", eval_split, args.eval),):
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            split = build(n, seed=args.seed, config=config, data_dir=args.data_dir)
            times.append(time.perf_counter() - start)
        tally = collections.Counter(QUALITY_NAMES[q] for q in split.quality.tolist())
        lengths = (tokenizer(list(split.captions)) != tokenizer.pad_id).sum(axis=1)
        print(
            f"\n{name}: {n} scenes in {min(times):.3f} s; "
            + ", ".join(f"{q} {tally[q]}" for q in QUALITY_NAMES if tally[q])
        )
        print(
            f"  distinct captions {len(set(split.captions))}; tokens per caption "
            f"mean {np.mean(lengths):.1f}, max {lengths.max()} (<eos> included)"
        )
        for i in range(min(args.examples, n)):
            print(f"  [{QUALITY_NAMES[split.quality[i]]}] {split.captions[i]}")


if __name__ == "__main__":
    main()
