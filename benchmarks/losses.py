"""Dense vs sharded (all-gather, ring) SigLIP sigmoid loss: time and memory.

Each variant computes the loss and its gradient with respect to both embedding
matrices for one global batch. The dense loss runs on one device; the sharded
variants split the batch over a mesh of simulated CPU devices.

Memory is XLA's own accounting from ``compiled.memory_analysis()`` for ONE
device (argument, output and temporary buffers of the per-device program; total
= their sum less aliased buffers), not the process RSS: the simulated devices share one process, so RSS mixes them.
Time is the median wall time of several calls after a warm-up; the simulated
devices share the host's cores, so it says little about real multi-device speed.

Usage::

    python benchmarks/losses.py                 # batches 4096 and 16384, D=256
    python benchmarks/losses.py --quick         # smoke run, seconds
    python benchmarks/losses.py --out results/losses.json
"""

import argparse
import json
import os
import statistics
import sys
import time

from machine import describe, launch

launch(__name__)

DEVICES = 8
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICES}"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec  # noqa: E402

from aced.losses import sharded_sigmoid_loss, sigmoid_loss  # noqa: E402

VARIANTS = ("dense", "all_gather", "ring")
MIB = 2**20


def loss_and_grads(variant, mesh):
    """Jitted ``(zimg, ztxt, t, b) -> (loss, (dzimg, dztxt))`` for one variant."""
    if variant == "dense":
        loss = sigmoid_loss
    else:

        def loss(zimg, ztxt, t, b):
            return sharded_sigmoid_loss(zimg, ztxt, t, b, mesh, "data", variant)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def embeddings(key, n, d):
    """L2-normalised random (n, d) image and text embeddings."""
    zimg, ztxt = jax.random.normal(key, (2, n, d), jnp.float32)
    normalise = lambda z: z / jnp.linalg.norm(z, axis=1, keepdims=True)  # noqa: E731
    return normalise(zimg), normalise(ztxt)


def measure(variant, n, d, mesh, repeats):
    """Compile, read the per-device memory analysis, time ``repeats`` calls."""
    zimg, ztxt = embeddings(jax.random.key(n), n, d)
    if variant == "dense":
        placement = jax.devices()[0]
    else:
        placement = NamedSharding(mesh, PartitionSpec("data"))
    zimg, ztxt = jax.device_put((zimg, ztxt), placement)
    t, b = jnp.float32(10.0), jnp.float32(-10.0)
    fn = loss_and_grads(variant, mesh)
    compiled = fn.lower(zimg, ztxt, t, b).compile()
    mem = compiled.memory_analysis()
    jax.block_until_ready(compiled(zimg, ztxt, t, b))  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(zimg, ztxt, t, b))
        times.append(time.perf_counter() - start)
    return {
        "variant": variant,
        "batch": n,
        "dim": d,
        "devices": 1 if variant == "dense" else mesh.size,
        "time_s_median": statistics.median(times),
        "times_s": times,
        "argument_mib": mem.argument_size_in_bytes / MIB,
        "output_mib": mem.output_size_in_bytes / MIB,
        "temp_mib": mem.temp_size_in_bytes / MIB,
        "total_mib": (
            mem.argument_size_in_bytes
            + mem.output_size_in_bytes
            + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes
        )
        / MIB,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="batch 256, D=32, 2 repeats")
    parser.add_argument("--out", default="results/losses.json")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.dim, args.repeats = [256], 32, 2
    for n in args.batch:
        if n % DEVICES != 0:
            parser.error(f"--batch {n} must be divisible by the {DEVICES} devices")

    mesh = jax.sharding.Mesh(
        np.array(jax.devices()[:DEVICES]), ("data",), axis_types=(AxisType.Auto,)
    )
    rows = [measure(v, n, args.dim, mesh, args.repeats) for n in args.batch for v in VARIANTS]

    header = (
        f"{'variant':<11}{'batch':>7}{'D':>5}{'dev':>5}{'time s':>9}"
        f"{'temp MiB':>10}{'arg MiB':>9}{'out MiB':>9}{'total MiB':>11}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['variant']:<11}{r['batch']:>7}{r['dim']:>5}{r['devices']:>5}"
            f"{r['time_s_median']:>9.3f}{r['temp_mib']:>10.1f}{r['argument_mib']:>9.1f}"
            f"{r['output_mib']:>9.1f}{r['total_mib']:>11.1f}"
        )

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(
            {
                "command": " ".join(["python", "benchmarks/losses.py", *sys.argv[1:]]),
                "memory": "compiled.memory_analysis() of one device's program, MiB; "
                "total = arguments + outputs + temporaries - aliased",
                "time": f"median of {args.repeats} calls after one warm-up, seconds",
                "jax": jax.__version__,
                "host": f"{describe()}, {DEVICES} simulated devices",
                "rows": rows,
            },
            f,
            indent=2,
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
