"""The matmuls of aced's IID step alone, in XLA and in torch, against both whole steps.

    /tmp/bench/bin/python benchmarks/matmul_floor.py --out benchmarks/results/matmul_floor.json
    /tmp/bench/bin/python benchmarks/matmul_floor.py --quick    # a smoke run
    XLA_FLAGS=--xla_cpu_use_onednn=true /tmp/bench/bin/python benchmarks/matmul_floor.py \
        --out benchmarks/results/matmul_floor_onednn.json       # XLA's oneDNN products

A step cannot be faster than its matrix products. This lists every
``dot_general`` of aced's IID training step on the model of
`benchmarks/throughput.py` (forward, backward and the loss; a ``scan`` body's
products counted once per iteration), times each distinct product on its own,
as XLA compiles it and as torch runs it (``torch.einsum``, the same operands),
and sums them with their counts: the time the step's products alone take in
each library. The products' operands are fresh random arrays, made once; each
timing runs ``--calls`` calls back to back and waits for the last. Then the
whole steps of aced IID and open_clip SigLIP run ``--steps`` steps, and all of
it alternates ``--repeats`` times (medians), so that a shared machine's load
falls on every part alike.

If XLA's products alone take longer than open_clip's whole step divided by a
target ratio, no change to aced outside the products reaches that ratio on
this machine.
"""

import argparse
import collections
import os
import statistics

from machine import describe, launch, write_result

launch(__name__)
from throughput import BATCH, aced_step, open_clip_step, time_steps  # noqa: E402

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402
from jax.extend import core as jex_core  # noqa: E402

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _subjaxprs(eqn):
    """``(jaxpr, times its body runs)`` for each jaxpr held in `eqn`'s parameters."""
    times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jex_core.ClosedJaxpr):
                yield item.jaxpr, times
            elif isinstance(item, jex_core.Jaxpr):
                yield item, times


def count_dots(jaxpr, times: int = 1, counts: collections.Counter | None = None):
    """``Counter({(lhs shape, rhs shape, dimension numbers, dtype): calls})`` of `jaxpr`.

    A ``while`` loop's body counts once (its trip count is not static); aced's
    IID step has none, only scans, whose bodies count ``length`` times.
    """
    counts = collections.Counter() if counts is None else counts
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            lhs, rhs = (v.aval for v in eqn.invars)
            (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
            dims = ((tuple(lc), tuple(rc)), (tuple(lb), tuple(rb)))
            key = (lhs.shape, rhs.shape, dims, str(lhs.dtype))
            counts[key] += times
        for sub, inner in _subjaxprs(eqn):
            count_dots(sub, times * inner, counts)
    return counts


def flops(key) -> int:
    lhs, rhs, ((lc, rc), (lb, rb)), _ = key
    free_lhs = [d for i, d in enumerate(lhs) if i not in lc and i not in lb]
    free_rhs = [d for i, d in enumerate(rhs) if i not in rc and i not in rb]
    return 2 * int(np.prod([lhs[i] for i in lb] + [lhs[i] for i in lc] + free_lhs + free_rhs))


def einsum_spec(key) -> str:
    """The ``torch.einsum`` subscripts of a ``dot_general`` (output: batch, lhs free, rhs free)."""
    lhs, rhs, ((lc, rc), (lb, rb)), _ = key
    letters = iter(LETTERS)
    a = [next(letters) for _ in lhs]
    b = [None] * len(rhs)
    for i, j in zip((*lb, *lc), (*rb, *rc)):
        b[j] = a[i]
    b = [letter or next(letters) for letter in b]
    out = [a[i] for i in lb]
    out += [a[i] for i in range(len(lhs)) if i not in lc and i not in lb]
    out += [b[j] for j in range(len(rhs)) if j not in rc and j not in rb]
    return f"{''.join(a)},{''.join(b)}->{''.join(out)}"


def xla_product(key):
    lhs, rhs, dims, dtype = key
    rng = np.random.default_rng(0)
    a = jax.numpy.asarray(rng.standard_normal(lhs, dtype=np.float32).astype(dtype))
    b = jax.numpy.asarray(rng.standard_normal(rhs, dtype=np.float32).astype(dtype))
    fn = jax.jit(lambda x, y: lax.dot_general(x, y, dims))
    jax.block_until_ready(fn(a, b))
    return lambda: fn(a, b), jax.block_until_ready


def torch_product(key):
    import torch

    lhs, rhs, _, _ = key
    spec = einsum_spec(key)
    a, b = torch.randn(lhs), torch.randn(rhs)
    torch.einsum(spec, a, b)
    return lambda: torch.einsum(spec, a, b), lambda out: None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="consecutive steps per timing")
    parser.add_argument("--calls", type=int, default=10, help="calls per product timing")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--quick", action="store_true", help="2 repeats, 2 steps, 2 calls")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    repeats, steps, calls = (2, 2, 2) if args.quick else (args.repeats, args.steps, args.calls)
    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    run, sync, _ = aced_step("iid")
    counts = count_dots(run.jaxpr().jaxpr)
    products = {key: (xla_product(key), torch_product(key)) for key in counts}
    steps_of = {"aced/iid": (run, sync), "open_clip/siglip": open_clip_step("siglip")[:2]}
    for step_run, step_sync in steps_of.values():  # compile / warm up
        step_sync(step_run())
        step_sync(step_run())
    seconds = {name: [] for name in steps_of} | {"xla": [], "torch": []}
    per_product = {key: {"xla": [], "torch": []} for key in products}
    for _ in range(repeats):
        for name, (step_run, step_sync) in steps_of.items():
            seconds[name].append(time_steps(step_run, step_sync, steps))
        for library, column in (("xla", 0), ("torch", 1)):
            total = 0.0
            for key, pair in products.items():
                t = time_steps(*pair[column], calls)
                per_product[key][library].append(t)
                total += counts[key] * t
            seconds[library].append(total)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    total_flops = sum(counts[key] * flops(key) for key in counts)
    rows = [
        {
            "lhs": list(key[0]), "rhs": list(key[1]), "einsum": einsum_spec(key),
            "count": counts[key], "flops": flops(key),
            "xla_s": statistics.median(per_product[key]["xla"]),
            "torch_s": statistics.median(per_product[key]["torch"]),
        }
        for key in sorted(counts, key=lambda k: -counts[k] * flops(k))
    ]  # fmt: skip
    print(f"{'einsum':18s} {'lhs':>16s} {'rhs':>16s} {'n':>3s} {'xla ms':>8s} {'torch ms':>8s}")
    for row in rows:
        print(f"{row['einsum']:18s} {str(tuple(row['lhs'])):>16s} {str(tuple(row['rhs'])):>16s} "
              f"{row['count']:3d} {row['xla_s'] * 1e3:8.3f} {row['torch_s'] * 1e3:8.3f}")  # fmt: skip
    print(f"{len(rows)} distinct products, {sum(counts.values())} calls, "
          f"{total_flops / 1e9:.2f} GFLOP a step")  # fmt: skip
    for name in seconds:
        rate = total_flops / median[name] / 1e9
        print(f"{name:18s} {median[name] * 1e3:8.1f} ms  ({rate:.1f} GFLOP/s of the products)")
    result = {
        "products": rows,
        "product_flops_per_step": total_flops,
        "seconds": seconds,
        "median_seconds": median,
        "examples_per_s": {name: BATCH / median[name] for name in steps_of},
        "repeats": repeats,
        "steps_per_timing": steps,
        "calls_per_product": calls,
        "torch_threads": args.threads,
        "machine": describe(),
        "versions": {"jax": jax.__version__, "torch": torch.__version__},
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    if args.out:
        write_result(result, args.out)


if __name__ == "__main__":
    main()
