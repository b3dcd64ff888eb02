"""``python -m aced.eval``: build the evaluation suite and describe it.

Prints each task's size, number of classes, chance level and one image's
candidate prompts, the retrieval set, and the suite's build time. With
``--random-model`` it also scores a randomly initialised ``mu/7`` two-tower
model, which should land near chance. The figures of ``docs/eval.md`` come
from this command.
"""

import argparse
import time

import jax

from aced.data.scenes import SceneConfig
from aced.data.tokenize import builtin_tokenizer
from aced.eval.evaluate import evaluate, format_table
from aced.eval.tasks import build_suite


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aced.eval", description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-task", type=int, default=200)
    parser.add_argument("--retrieval-size", type=int, default=500)
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST idx directory")
    parser.add_argument("--random-model", action="store_true", help="score a random mu/7 model")
    args = parser.parse_args(argv)

    config = SceneConfig()
    start = time.perf_counter()
    suite = build_suite(
        seed=args.seed,
        config=config,
        per_task=args.per_task,
        retrieval_size=args.retrieval_size,
        data_dir=args.data_dir,
    )
    print(f"suite built in {time.perf_counter() - start:.2f} s (seed {args.seed})")
    print(f"{len(suite.prompt_sets)} prompt sets, {sum(map(len, suite.prompt_sets))} prompts")
    for task in suite.tasks:
        k = task.candidates.shape[1]
        first = [suite.prompt_sets[c][0] for c in task.candidates[0]]
        shown = ", ".join(f'"{p}"' for p in first[:4]) + (", ..." if k > 4 else "")
        print(
            f"  {task.name:<22} n={len(task.labels):<5} K={k:<3} chance {task.chance:.3f}  {shown}"
        )
    n = len(suite.retrieval.captions)
    print(f'  retrieval              n={n} pairs, e.g. "{suite.retrieval.captions[0]}"')
    if args.random_model:
        from aced.models import TwoTower, TwoTowerConfig

        tokenizer = builtin_tokenizer(config)
        model_config = TwoTowerConfig.from_variants(
            image_variant="mu/7",
            text_variant="mu",
            embed_dim=64,
            image_size=config.image_size[0],
            vocab_size=tokenizer.vocab_size,
            max_len=tokenizer.max_len,
        )
        model = TwoTower(model_config, key=jax.random.key(args.seed))
        start = time.perf_counter()
        results = evaluate(model, tokenizer, suite, batch_size=256)
        print(f"\nrandom mu/7 model, evaluated in {time.perf_counter() - start:.1f} s:")
        print(format_table(results, suite))


if __name__ == "__main__":
    main()
