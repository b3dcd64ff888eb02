"""The prepared accelerator check: the selection kernel compiled, in one run of a few minutes.

On one GPU (or TPU) the script runs, each part in a fresh process so that its
peak device memory is its own, each bounded by what is left of ``--budget``
seconds (default 420), and each failure recorded rather than fatal:

1. ``kernel_tests``: ``tests/test_kernel_pair_scores.py`` and
   ``tests/test_kernel_mgpu.py``, whose compiled cases run wherever the default
   backend is not the CPU (the Mosaic GPU ones on a Hopper GPU);
2. ``blocked_vs_dense``: `joint_select_blocked` (the compiled kernel) against
   `joint_select` on the dense f32 matrix at B = 16,384, D = 256: the fraction
   of indices shared (a compiled kernel rounds its products its own way, so
   exact ties may break differently) and whether they are identical; once per
   kernel of `KERNELS` (the effect of each precision on the selected indices);
3. ``blocked_select``: blocked selection at B = 65,536 (b = 13,104, 16 chunks)
   for D in {256, 768, 1152}: compile and run seconds, peak device memory;
4. ``kernel_flops``: one call of the kernel (chunk c = 819, D = 768,
   learnability: two views) against an XLA matmul of the same shapes
   (2 products of (B, D) x (D, c) per view): achieved FLOP/s of each, and the
   largest difference of the sums from the dense f32 reference; once per
   kernel (`KERNELS`: Triton, and Mosaic GPU at each precision; on a GPU
   without wgmma the Mosaic GPU rows record their error);
5. ``acid_step``: one ACID step (``mu/7`` learner, ``nano/7`` reference,
   B = 16,384, b = 3,072): compile and step seconds.

Every other part uses the kernel (``gpu_lowering="auto"``: Mosaic GPU on a
Hopper GPU, Triton on others) and the tiles a user gets by default (`aced.kernels.default_blocks`:
`aced.kernels.GPU_BLOCKS` compiled, within the per-program budget, and
``BlockSizes()`` in the interpreter), recorded in each row; the dense matrix of
part 2 is built on the same tiles.

It writes ``accelerator_check.json`` and ``accelerator_check.md`` to ``--out``.
``--smoke`` shrinks every size 32-fold and runs on the CPU in interpret mode,
to check the script itself. On the device machine, from the repository root::

    PYTHONPATH=. python3 benchmarks/accelerator_check.py --out $OUT
    python benchmarks/accelerator_check.py --smoke --out /tmp/check   # here, on CPU
"""

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

PARTS = ("kernel_tests", "blocked_vs_dense", "blocked_select", "kernel_flops", "acid_step")
WIDTHS = (256, 768, 1152)
# (gpu_lowering, precision) of the blocked_vs_dense and kernel_flops rows; --smoke runs
# the first (interpreted).
KERNELS = (("triton", "highest"), ("mosaic_gpu", "highest"), ("mosaic_gpu", "tf32"),
           ("mosaic_gpu", "bf16"))  # fmt: skip


def views(n: int, d: int, seed: int):
    import jax
    import jax.numpy as jnp

    from aced.selection import Embedded

    zimg, ztxt = jax.random.normal(jax.random.key(seed), (2, n, d), jnp.float32)
    unit = lambda z: z / jnp.linalg.norm(z, axis=1, keepdims=True)  # noqa: E731
    return Embedded(unit(zimg), unit(zimg + ztxt), jnp.float32(10.0), jnp.float32(-10.0))


def timed(fn, *args, repeats: int = 3) -> tuple[float, float]:
    """(first call seconds, compilation included; median seconds of `repeats` more)."""
    import jax

    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def chosen_block(block, kernel: tuple[str, str] | None):
    """`block` with the (gpu_lowering, precision) of `kernel` (default: the first of
    `KERNELS`)."""
    lowering, precision = kernel or KERNELS[0]
    return dataclasses.replace(block, gpu_lowering=lowering, precision=precision)


def peak_bytes():
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def part(name: str, scale: int, width: int | None, kernel: tuple[str, str] | None) -> dict:
    """One part, in this process; returns its row."""
    import jax

    from aced.kernels import (
        blocked_pair_score_sums,
        blocked_pair_score_sums_reference,
        default_blocks,
        resolve_interpret,
    )
    from aced.selection import PAIR_SCORES, joint_select, joint_select_blocked, score_matrix

    # The tiles each path uses unless told: GPU_BLOCKS compiled, BlockSizes() interpreted.
    block = default_blocks(resolve_interpret(None))
    row = {"backend": jax.default_backend(), "interpret": resolve_interpret(None),
           "block": dataclasses.asdict(block)}  # fmt: skip
    if name == "blocked_vs_dense":
        n, d = 16384 // scale, 256
        learner, reference = views(n, d, 0), views(n, d + 128, 1)
        key, b = jax.random.key(0), (n // 5) // 16 * 16
        # The same tiles for both paths: the dense matrix's entries are the kernel's products
        # (f32: the reference each kernel and precision is measured against).
        matrix = score_matrix(learner, reference, "learnability", block=block)
        dense = joint_select(key, matrix, b, 16)
        chosen = chosen_block(block, kernel)
        row["block"] = dataclasses.asdict(chosen)
        blocked = joint_select_blocked(key, learner, reference, "learnability", b, 16, block=chosen)
        shared = len(set(dense.tolist()) & set(blocked.tolist())) / b
        row |= {
            "B": n,
            "D": d,
            "b": b,
            "shared": shared,
            "identical": bool((dense == blocked).all()),
        }
    elif name == "blocked_select":
        n = 65536 // scale
        learner, reference = views(n, width, 0), views(n, width, 1)
        b = (n // 5) // 16 * 16
        select = lambda k: joint_select_blocked(k, learner, reference, "learnability", b, 16)  # noqa: E731
        first, run = timed(select, jax.random.key(0), repeats=1)
        row |= {"B": n, "D": width, "b": b, "first_s": first, "run_s": run}
    elif name == "kernel_flops":
        n, d, c = 65536 // scale, 768, max(819 // scale, 16)
        learner, reference = views(n, d, 0), views(n, d, 1)
        entry = PAIR_SCORES["learnability"]
        score_views = entry.views(learner, reference)
        chunk = jax.numpy.arange(c, dtype=jax.numpy.int32) * (n // c)
        block = chosen_block(block, kernel)
        row["block"] = dataclasses.asdict(block)
        kernel = jax.jit(
            lambda ch: blocked_pair_score_sums(score_views, entry.combine, ch, block=block)
        )

        @jax.jit
        def matmuls(ch):  # the kernel's products, plain: S[k, q] and S[q, k] per view
            out = 0.0
            for v in score_views:
                for rows, cols in ((v.zimg, v.ztxt), (v.ztxt, v.zimg)):
                    out += (rows @ cols[ch].T).sum()
            return out

        flops = 2 * 2 * n * c * d * len(score_views)
        (_, kernel_s), (_, matmul_s) = timed(kernel, chunk), timed(matmuls, chunk)
        want = blocked_pair_score_sums_reference(score_views, entry.combine, chunk)
        error = max(float(abs(g - w).max()) for g, w in zip(kernel(chunk), want))
        row |= {"B": n, "D": d, "c": c, "flops": flops, "kernel_tflops": flops / kernel_s / 1e12,
                "matmul_tflops": flops / matmul_s / 1e12, "kernel_vs_matmul": matmul_s / kernel_s,
                "max_abs_error": error}  # fmt: skip
    elif name == "acid_step":
        row |= acid_step(16384 // scale)
    row["peak_device_bytes"] = peak_bytes()
    return row


def acid_step(n: int) -> dict:
    import jax
    import numpy as np
    from jax.sharding import Mesh

    os.environ.setdefault("JAX_PLATFORMS", jax.default_backend())  # step.py would pick the CPU
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from step import LEARNER, REFERENCE, make_problem, tower_config  # benchmarks/step.py

    from aced.models import TwoTower
    from aced.train.config import preset, updated
    from aced.train.state import init_train_state
    from aced.train.step import make_train_step

    config = updated(preset("acid").step, {"selection.filter_ratio": 0.8125,
                                           "reference_embeddings": "online"})  # fmt: skip
    learner, _, batch = make_problem(n)
    reference = TwoTower(tower_config(REFERENCE), key=jax.random.key(1))
    state = init_train_state(learner, config, jax.random.key(3))
    step = make_train_step(config, Mesh(np.array(jax.devices()[:1]), ("data",)))
    box = {"state": state}

    def run():
        box["state"], metrics = step(box["state"], batch, reference)
        return metrics

    first, step_s = timed(run)
    return {"B": n, "b": config.sub_batch_size(n), "learner": LEARNER, "reference": REFERENCE,
            "first_s": first, "step_s": step_s}  # fmt: skip


def in_subprocess(
    name: str, scale: int, width: int | None, kernel: tuple[str, str] | None, timeout: float
) -> dict:
    if name == "kernel_tests":
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "tests/test_kernel_pair_scores.py", "tests/test_kernel_mgpu.py"]  # fmt: skip
    else:
        command = [sys.executable, __file__, "--part", name, "--scale", str(scale)]
        command += ["--width", str(width)] if width else []
        command += ["--kernel", *kernel] if kernel else []
    named = {"kernel": "/".join(kernel)} if kernel else {}
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"part": name, "D": width, **named, "error": f"stopped after {timeout:.0f} s"}
    row = {"part": name, "seconds": round(time.perf_counter() - start, 1), **named}
    lines = done.stdout.strip().splitlines()
    if name == "kernel_tests":
        return row | {
            "ok": done.returncode == 0,
            "summary": lines[-1] if lines else done.stderr[-500:],
        }
    if done.returncode:
        return row | {"D": width, "error": (done.stderr.strip().splitlines() or ["?"])[-1][-500:]}
    return row | json.loads(lines[-1])


def markdown(rows: list[dict]) -> str:
    lines = ["| part | result |", "|---|---|"]
    for r in rows:
        shown = {
            k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in r.items() if k != "part"
        }
        lines.append(f"| {r['part']} | " + ", ".join(f"{k}={v}" for k, v in shown.items()) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=False, default=".", help="folder for the JSON and table")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for all parts")
    parser.add_argument("--smoke", action="store_true", help="sizes / 32, on CPU (interpret)")
    parser.add_argument("--part", choices=PARTS[1:], help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--kernel", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:  # a worker: one part, its row as the last line
        kernel = tuple(args.kernel) if args.kernel else None
        print(json.dumps(part(args.part, args.scale, args.width, kernel)))
        return
    if args.smoke:
        os.environ["JAX_PLATFORMS"] = "cpu"
    scale, deadline = (32 if args.smoke else 1), time.monotonic() + args.budget
    kernels = KERNELS[:1] if args.smoke else KERNELS
    jobs = [("kernel_tests", None, None)] + [("blocked_vs_dense", None, k) for k in kernels]
    jobs += [("blocked_select", d, None) for d in WIDTHS]
    jobs += [("kernel_flops", None, k) for k in kernels] + [("acid_step", None, None)]
    rows = []
    for name, width, kernel in jobs:
        left = deadline - time.monotonic()
        if left < 5:
            rows.append({"part": name, "D": width, "error": "not run: the time budget was spent"})
            continue
        rows.append(in_subprocess(name, scale, width, kernel, left))
        print(json.dumps(rows[-1]), flush=True)
    os.makedirs(args.out, exist_ok=True)
    result = {"smoke": args.smoke, "budget_s": args.budget, "rows": rows}
    with open(os.path.join(args.out, "accelerator_check.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(args.out, "accelerator_check.md"), "w") as f:
        f.write(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
