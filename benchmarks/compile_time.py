"""Compile time of one train step under XLA's default code generation and the test suite's.

    python benchmarks/compile_time.py [--repeats 3] [--out benchmarks/results/compile_time.json]

The test suite's time is almost all XLA compilation of tiny programs, so it
compiles with `tests/xla_flags.py`'s ``FAST_COMPILE`` flags. This script
measures what they buy: it compiles the ACED step of the tests' tiny problem
(``tests/step_problem.py``: depth-2 ``mu`` towers, super-batch 32, 4 chunks)
in a fresh process per measurement (nothing cached), alternating the
settings, and reports each compile's seconds (wall and CPU), the medians and
their ratios, and whether the programs' parameters after one step are
bit-identical to the suite's: three settings, XLA's defaults (not
bit-identical: the flags change rounding), the suite's flags, and the suite's
flags but with LLVM modules split for compiling in parallel as XLA does by
default (``split``: the same machine code, so bit-identical, at more CPU time).
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from machine import describe  # noqa: E402
from xla_flags import FAST_COMPILE, SPLIT  # noqa: E402

PROBE = """
import hashlib, sys, time
sys.path.insert(0, sys.argv[1])
import equinox as eqx, jax, numpy as np
jax.config.update("jax_numpy_dtype_promotion", "strict")
from step_problem import aced_config, sgd_state, tiny_batch, tiny_models
from aced.train.step import make_train_step
learner, reference = tiny_models()
config = aced_config()
state, batch = sgd_state(learner, config), tiny_batch()
lowered = make_train_step(config).lower(state, batch, reference)
start, cpu = time.perf_counter(), time.process_time()
compiled = lowered.compile()
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
new = compiled(state, batch, reference)[0]
leaves = jax.tree.leaves(eqx.filter(new.learner, eqx.is_array))
digest = hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in leaves)).hexdigest()
print(seconds, cpu, digest)
"""


def measure(flags: tuple[str, ...]) -> tuple[float, float, str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_ENABLE_COMPILATION_CACHE": "false",
           "XLA_FLAGS": " ".join([*flags, "--xla_force_host_platform_device_count=8"])}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "tests")], env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    seconds, cpu, digest = out.stdout.split()[-3:]
    return float(seconds), float(cpu), digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/compile_time.json"))
    args = parser.parse_args(argv)
    split = tuple(f for f in FAST_COMPILE if f != SPLIT)
    settings = {"default": (), "tests": FAST_COMPILE, "split": split}
    times = {name: [] for name in settings}
    cpu = {name: [] for name in settings}
    digests = {}
    for _ in range(args.repeats):
        for name, flags in settings.items():
            seconds, cpu_s, digests[name] = measure(flags)
            times[name].append(seconds)
            cpu[name].append(cpu_s)
            print(f"{name:8s} {seconds:6.2f} s, {cpu_s:6.2f} CPU s", flush=True)
    medians = {name: statistics.median(t) for name, t in times.items()}
    cpu_medians = {name: statistics.median(t) for name, t in cpu.items()}
    result = {
        "flags": {name: list(flags) for name, flags in settings.items()},
        "seconds": times,
        "cpu_seconds": cpu,
        "median_s": medians,
        "median_cpu_s": cpu_medians,
        "speedup": medians["default"] / medians["tests"],
        "split_cpu_ratio": cpu_medians["split"] / cpu_medians["tests"],
        "bit_identical_after_one_step": digests["default"] == digests["tests"],
        "split_bit_identical_after_one_step": digests["split"] == digests["tests"],
        "cpu_count": os.cpu_count(),
        "machine": describe(),
    }
    print(f"median: default {medians['default']:.2f} s, tests {medians['tests']:.2f} s, "
          f"{result['speedup']:.2f}x faster; bit-identical: {result['bit_identical_after_one_step']}")  # fmt: skip
    print(f"median CPU s: tests {cpu_medians['tests']:.2f}, split {cpu_medians['split']:.2f} "
          f"({result['split_cpu_ratio']:.2f}x); bit-identical: "
          f"{result['split_bit_identical_after_one_step']}")  # fmt: skip
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
