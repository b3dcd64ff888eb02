"""How the pair-score products' precision (`step.selection.precision`) changes the selection.

For B = 4096 (b = 819, 16 chunks; D = 256 learner, 384 reference) the script
builds learner and reference views of a super-batch in which each caption is
its image's embedding plus noise (the reference less noisy, so learnability has
structure), selects with ``precision="highest"`` and with each other
precision, on the same key, and reports the fraction of the sub-batch they
share, for the ``jest`` (sampled) and ``greedy`` (top scores) rules over
``--seeds`` keys. For scale it also reports the overlap of two *different* keys
at ``highest``: the variation the sampling itself has. Also: the largest
change of a pair score. On CPU ``tf32`` is XLA's f32 product (CPUs have no TF32),
so only ``bf16`` differs there; on an NVIDIA GPU both do.

Usage::

    python benchmarks/precision.py --out benchmarks/results/precision.json
    python benchmarks/precision.py --quick   # B = 512
"""

import argparse
import os

from machine import describe, write_result

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from aced.kernels import PRECISIONS, BlockSizes  # noqa: E402
from aced.selection import Embedded, joint_select, score_matrix  # noqa: E402


def views(rng, n: int, d: int, noise: float, t: float, b: float) -> Embedded:
    def unit(z):
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    zimg = unit(rng.standard_normal((n, d)))
    ztxt = unit(zimg + noise * rng.standard_normal((n, d)) / np.sqrt(d))
    return Embedded(jnp.asarray(zimg, jnp.float32), jnp.asarray(ztxt, jnp.float32),
                    jnp.float32(t), jnp.float32(b))  # fmt: skip


def overlap(a, b) -> float:
    return len(set(np.asarray(a).tolist()) & set(np.asarray(b).tolist())) / len(a)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="B = 512, 2 seeds")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    n, seeds = (512, 2) if args.quick else (4096, args.seeds)
    n_select, n_chunks = int(0.2 * n), 16
    n_select -= n_select % n_chunks
    rng = np.random.default_rng(0)
    learner = views(rng, n, 256, 3.0, 10.0, -10.0)
    reference = views(rng, n, 384, 1.0, 10.0, -10.0)
    matrices = {
        p: score_matrix(learner, reference, "learnability", block=BlockSizes(precision=p))
        for p in PRECISIONS
    }
    rows = []
    for p in PRECISIONS:
        change = float(jnp.abs(matrices[p] - matrices["highest"]).max())
        for rule in ("jest", "greedy"):
            shared, keys = [], []
            for seed in range(seeds):
                key = jax.random.key(seed)
                pick = {q: joint_select(key, matrices[q], n_select, n_chunks, rule=rule)
                        for q in ("highest", p)}  # fmt: skip
                shared.append(overlap(pick[p], pick["highest"]))
                other = joint_select(jax.random.key(seed + 1000), matrices["highest"], n_select,
                                     n_chunks, rule=rule)  # fmt: skip
                keys.append(overlap(other, pick["highest"]))
            rows.append({"precision": p, "rule": rule, "max_score_change": change,
                         "overlap_with_highest": float(np.mean(shared)),
                         "min_overlap_with_highest": float(np.min(shared)),
                         "overlap_of_two_keys": float(np.mean(keys))})  # fmt: skip
    print(f"B = {n}, b = {n_select}, {n_chunks} chunks, {seeds} keys, {jax.default_backend()}")
    print(
        f"{'precision':9s} {'rule':6s} {'max |dS|':>9s} {'shared':>7s} {'min':>6s} {'2 keys':>7s}"
    )
    for r in rows:
        print(f"{r['precision']:9s} {r['rule']:6s} {r['max_score_change']:9.2e} "
              f"{r['overlap_with_highest']:7.3f} {r['min_overlap_with_highest']:6.3f} "
              f"{r['overlap_of_two_keys']:7.3f}")  # fmt: skip
    if args.out:
        result = {"B": n, "b": n_select, "n_chunks": n_chunks, "seeds": seeds, "rows": rows,
                  "backend": jax.default_backend(), "machine": describe(),
                  "jax": jax.__version__}  # fmt: skip
        write_result(result, args.out)


if __name__ == "__main__":
    main()
