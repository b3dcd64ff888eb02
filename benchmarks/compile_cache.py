"""What the persistent compilation cache saves a rerun of ``aced train``.

    python benchmarks/compile_cache.py [--repeats 2] [--out benchmarks/results/compile_cache.json]

Each repeat starts from an empty cache directory (``ACED_COMPILATION_CACHE``,
docs/training.md) and runs the same small ACED run twice, each time in a fresh
``python -m aced train`` process with XLA's default code generation: the
``smoke`` preset with tiny towers (``mu/14``, 4 learner steps, a 2-step
reference trained first). The first run compiles and writes the cache; the
second loads its programs. The JSON has each run's CPU seconds (user + system,
``resource.getrusage`` of the child), wall seconds, the number of files in the
cache directory after each run (the entries; with a size bound also their
access times and the lock), and whether the two runs' final parameters are
bit-identical (a loaded executable is the binary a fresh compile makes).
"""

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from machine import describe

RUN = [
    "model.image_variant=mu/14", "model.embed_dim=16", "model.max_len=12",
    "data.super_batch_size=32", "data.size=256", "step.optim.warmup_steps=1",
    "step.selection.filter_ratio=0.5", "step.selection.n_chunks=2", "train.steps=4",
    "train.log_every=1", "train.checkpoint_every=2", "train.eval_per_task=8",
    "train.eval_retrieval_size=8", "train.eval_batch_size=64", "train.progress=false",
    "reference.image_variant=mu/14", "reference.text_variant=mu", "reference.train_steps=2",
    "reference.curated_size=64", "reference.super_batch_size=32", "reference.warmup_steps=1",
]  # fmt: skip


def timed_train(out: pathlib.Path, cache: pathlib.Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_FLAGS"))}
    env |= {"JAX_PLATFORMS": "cpu", "ACED_COMPILATION_CACHE": str(cache)}
    command = [sys.executable, "-m", "aced", "train", "--preset", "smoke", *RUN]
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run([*command, f"train.out_dir={out}"], env=env, capture_output=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode()[-3000:])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_s": cpu, "wall_s": wall, "cache_entries": len(list(cache.iterdir()))}


def same_parameters(a: pathlib.Path, b: pathlib.Path) -> bool:
    import equinox as eqx
    import jax
    import numpy as np

    from aced.models import load_two_tower

    leaves = [
        jax.tree.leaves(eqx.filter(load_two_tower(d / "model"), eqx.is_array)) for d in (a, b)
    ]
    return all(np.array_equal(x, y) for x, y in zip(*leaves, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    repeats = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = pathlib.Path(tmp)
            cold = timed_train(tmp / "cold", tmp / "cache")
            warm = timed_train(tmp / "warm", tmp / "cache")
            repeats.append({"cold": cold, "warm": warm, "bit_identical": same_parameters(
                tmp / "cold", tmp / "warm")})  # fmt: skip
        print(json.dumps(repeats[-1]))
    result = {
        "repeats": repeats,
        "median_cpu_s": {k: statistics.median(r[k]["cpu_s"] for r in repeats) for k in ("cold", "warm")},
        "cpu_count": os.cpu_count(),
        "machine": describe(),
    }  # fmt: skip
    cold, warm = result["median_cpu_s"]["cold"], result["median_cpu_s"]["warm"]
    print(f"aced train, CPU seconds (median of {args.repeats}): cold cache {cold:.1f}, "
          f"warm {warm:.1f} ({warm / cold:.2f}x)")  # fmt: skip
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
