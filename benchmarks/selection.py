"""Dense vs blocked JEST selection: wall time and peak memory.

Both paths go from the two models' embeddings to the selected indices:
``dense`` builds the (B, B) learnability matrix (`score_matrix`) and runs
`joint_select` on it; ``blocked`` runs `joint_select_blocked`, the Pallas
kernel in interpret mode (the only mode on CPU), never forming B x B.
Filtering ratio f = 0.8 (n_select = 0.2 B rounded to a multiple of 16), 16
chunks, D = 256 for learner and reference, float32, learnability scores.

Each (path, B) runs in a fresh subprocess, so its peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``) is its own; ``base`` is the RSS after
importing JAX and making the embeddings, before compiling. Times: ``compile``
is ahead-of-time lowering and compilation, ``run`` one call of the compiled
program. Dense at B = 65,536 is not run: its score matrix alone is
B^2 * 4 bytes = 17.2 GB (the machine has 24 GB, shared); the table gives that
estimate instead. Where both paths ran, the script checks they chose the same
indices.

Usage::

    python benchmarks/selection.py                      # B = 4096, 16384, 65536
    python benchmarks/selection.py --quick              # smoke run, B = 512
    python benchmarks/selection.py --out results/selection.json
    python benchmarks/selection.py --block-rows 512 --block-cols 64
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from machine import describe

os.environ.setdefault("JAX_PLATFORMS", "cpu")

SIZES = (4096, 16384, 65536)
QUICK_SIZES = (512,)
DENSE_LIMIT_BYTES = 8 * 2**30  # skip dense when its score matrix alone exceeds this
N_CHUNKS = 16
WIDTH = 256
FILTER_RATIO = 0.8
MIB = 2**20


def n_select_for(size: int) -> int:
    """(1 - f) * B rounded to a multiple of 16 (the chunk count)."""
    return max(N_CHUNKS, round((1 - FILTER_RATIO) * size / N_CHUNKS) * N_CHUNKS)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def worker(path: str, size: int, block_rows: int, block_cols: int, out: str) -> dict:
    """One measurement, in this (fresh) process."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from aced.kernels import BlockSizes
    from aced.selection import Embedded, joint_select, joint_select_blocked, score_matrix

    n_select = n_select_for(size)
    block = BlockSizes(block_rows, block_cols)
    rng = np.random.default_rng(0)

    def embedded(t, b):
        z = rng.standard_normal((2, size, WIDTH), dtype=np.float32)
        z /= np.linalg.norm(z, axis=2, keepdims=True)
        return Embedded(jnp.asarray(z[0]), jnp.asarray(z[1]), jnp.float32(t), jnp.float32(b))

    learner, reference = embedded(10.0, -10.0), embedded(10.0, -10.0)
    key = jax.random.key(0)
    jax.block_until_ready((learner, reference))
    base = current_rss_mib()

    if path == "dense":

        def select(key, learner, reference):
            scores = score_matrix(learner, reference, "learnability", block=block)
            return joint_select(key, scores, n_select, N_CHUNKS)

    else:

        def select(key, learner, reference):
            return joint_select_blocked(
                key, learner, reference, "learnability", n_select, N_CHUNKS, block=block
            )

    start = time.perf_counter()
    compiled = jax.jit(select).lower(key, learner, reference).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    indices = jax.block_until_ready(compiled(key, learner, reference))
    run_s = time.perf_counter() - start
    np.save(out, np.asarray(indices))
    return {
        "path": path,
        "B": size,
        "n_select": n_select,
        "compile_s": round(compile_s, 2),
        "run_s": round(run_s, 2),
        "base_rss_mib": round(base),
        "peak_rss_mib": round(peak_rss_mib()),
    }


def measure(path: str, size: int, args, scratch: str) -> dict:
    """Run `worker` in a fresh interpreter and parse its JSON line."""
    out = os.path.join(scratch, f"{path}_{size}.npy")
    command = [
        sys.executable, __file__, "--worker", path, "--size", str(size),
        "--block-rows", str(args.block_rows), "--block-cols", str(args.block_cols),
        "--indices", out,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{path} B={size} failed:\n{done.stderr[-4000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["indices"] = out
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run at B = 512")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    parser.add_argument("--block-rows", type=int, default=None, help="kernel row tile")
    parser.add_argument("--block-cols", type=int, default=None, help="kernel column tile")
    parser.add_argument("--sizes", type=int, nargs="*", default=None, help="super-batch sizes")
    parser.add_argument("--paths", nargs="*", default=("dense", "blocked"))
    parser.add_argument("--worker", choices=("dense", "blocked"), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--indices", help=argparse.SUPPRESS)
    args = parser.parse_args()

    from aced.kernels import BlockSizes

    default = BlockSizes()
    args.block_rows = args.block_rows or default.block_rows
    args.block_cols = args.block_cols or default.block_cols
    if args.worker:
        row = worker(args.worker, args.size, args.block_rows, args.block_cols, args.indices)
        print(json.dumps(row))
        return

    import numpy as np

    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in sizes:
            by_path = {}
            for path in args.paths:
                matrix_bytes = size * size * 4
                if path == "dense" and matrix_bytes > DENSE_LIMIT_BYTES:
                    row = {
                        "path": path, "B": size, "n_select": n_select_for(size),
                        "skipped": f"score matrix alone needs {matrix_bytes / 1e9:.1f} GB",
                    }  # fmt: skip
                else:
                    row = measure(path, size, args, scratch)
                    by_path[path] = np.load(row.pop("indices"))
                rows.append(row)
                print(json.dumps(row), flush=True)
            if len(by_path) == 2:
                same = bool(np.array_equal(by_path["dense"], by_path["blocked"]))
                for row in rows[-2:]:
                    row["same_indices"] = same

    print()
    machine = describe()
    print(f"block_rows={args.block_rows} block_cols={args.block_cols}, D={WIDTH}, "
          f"{N_CHUNKS} chunks, f={FILTER_RATIO}, interpret mode, {machine}")  # fmt: skip
    header = "| path | B | n_select | compile s | run s | base RSS MiB | peak RSS MiB | same |"
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        if "skipped" in row:
            print(f"| {row['path']} | {row['B']} | {row['n_select']} | – | – | – | "
                  f"not run: {row['skipped']} | – |")  # fmt: skip
        else:
            print(f"| {row['path']} | {row['B']} | {row['n_select']} | {row['compile_s']} | "
                  f"{row['run_s']} | {row['base_rss_mib']} | {row['peak_rss_mib']} | "
                  f"{row.get('same_indices', '–')} |")  # fmt: skip
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        meta = {
            "command": " ".join(["python", "benchmarks/selection.py", *sys.argv[1:]]),
            "block_rows": args.block_rows,
            "block_cols": args.block_cols,
            "width": WIDTH,
            "n_chunks": N_CHUNKS,
            "filter_ratio": FILTER_RATIO,
            "cpu_count": os.cpu_count(),
        }
        with open(args.out, "w") as f:
            json.dump({"config": meta, "rows": rows}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
