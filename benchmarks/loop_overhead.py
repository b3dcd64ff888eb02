"""What the ``aced train`` loop costs beyond its step: loop examples/s against the bare step's.

    python benchmarks/loop_overhead.py --out benchmarks/results/loop_overhead.json
    python benchmarks/loop_overhead.py --quick     # a smoke run: 1 repeat, 40 steps
    python benchmarks/loop_overhead.py --checkpoint-every 1000   # no save inside the timing
    python benchmarks/loop_overhead.py --breakdown   # also where the loop's host time goes

For each method (``iid``, and ``acid`` with its reference trained first for a
few steps), one run of `aced.train.loop.train` on the method's preset (the
built-in data, the preset's logging every 10 steps and its checkpoints, here
every 50 steps so that they fall inside the timing) is timed from the dispatch
of the step after its first log (step 11) to the end of its last step (its
outputs awaited, so that a loop which dispatches steps ahead is timed to the
work done):
everything the loop does between steps (loading and sharding the next
super-batch, reading the metrics, logging, the selection diagnostics,
checkpoints) is inside; the one-off compilations (the step's, the
diagnostics' at the first log) and the final evaluation are not. Then the same
compiled step runs the same number of steps back to back on the run's last
super-batch, with one host synchronisation at the end: the bare step. The
two alternate ``--repeats`` times; the JSON has each timing, the medians, and
the overhead: the median over the repeats of ``1 - loop / bare``, each loop
run against the bare run right after it (a shared machine's load drifts).

With ``--breakdown``, each of the loop's host-side parts (`PARTS`) is timed
over the timed steps, per step: calls, wall time and its thread's CPU time;
for the parts on the main thread, during which no step computes, also the
CPU time of all the process's threads (orbax writes a checkpoint on threads
of its own). Loading and sharding run on the input thread while a step
computes, so their wall time includes waiting for the cores the step uses.
"""

import argparse
import contextlib
import itertools
import json
import os
import pathlib
import statistics
import tempfile
import time

from machine import describe, launch

launch(__name__)

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

from aced.train import loop  # noqa: E402
from aced.train.config import apply_overrides, preset  # noqa: E402

REFERENCE = ["reference.train_steps=10"]  # its quality does not matter here, only its shape


# The loop's host-side parts that --breakdown times: (owner, attribute) in aced.train.loop.
PARTS = {
    "load_batch": (loop.BatchIterator, "__next__"),
    "shard_batch": (loop, "super_batch"),
    "log": (loop.MetricsLog, "write"),
    "diagnostics": (loop, "selection_diagnostics"),
    "checkpoint": (loop, "save_checkpoint"),
}
# These two run on the input thread while a step computes: the process's CPU time over
# them is mostly the step's, so only their own thread's is kept.
INPUT_THREAD = ("load_batch", "shard_batch")


@contextlib.contextmanager
def timed_parts(totals: dict, counting: list):
    """Add each part's calls, wall seconds and its thread's CPU seconds to `totals` while
    `counting`; for the main thread's parts (the step waits for them) also the process's
    CPU seconds, every thread's (orbax writes on threads of its own)."""
    saved = {name: getattr(owner, attr) for name, (owner, attr) in PARTS.items()}

    def timing(name, fn):
        def timed(*args, **kwargs):
            wall, cpu, process = time.perf_counter(), time.thread_time(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                if counting:
                    t = totals.setdefault(name, {"calls": 0, "wall": 0.0, "cpu": 0.0})
                    t["calls"] += 1
                    t["wall"] += time.perf_counter() - wall
                    t["cpu"] += time.thread_time() - cpu
                    if name not in INPUT_THREAD:
                        t["process"] = t.get("process", 0.0) + time.process_time() - process

        return timed

    for name, (owner, attr) in PARTS.items():
        setattr(owner, attr, timing(name, saved[name]))
    try:
        yield
    finally:
        for name, (owner, attr) in PARTS.items():
            setattr(owner, attr, saved[name])


def timed_run(
    method: str,
    steps: int,
    out_dir: pathlib.Path,
    checkpoint_every: int = 50,
    parts: dict | None = None,
) -> tuple[float, float, int]:
    """(loop examples/s, bare examples/s, super-batch size) of one run of `method`;
    with `parts` (a dict), what each of `PARTS` cost over the timed steps is added to it."""
    counting: list[bool] = []  # made true at the learner's first timed step
    calls: list[float] = []
    done: list[float] = []  # when the learner's last step finished
    captured: dict = {}
    real = loop.compiled_step

    def recording(config, mesh):
        step = real(config, mesh)
        learner_calls = itertools.count(1)  # this wrapper's calls, when it runs the learner

        def timed(state, batch, reference):
            call = next(learner_calls) if config == run.step else 0
            if call == run.train.log_every + 1:  # the first timed step
                counting.append(True)
            calls.append(time.perf_counter())
            captured.update(state=state, batch=batch, reference=reference)
            result = step(state, batch, reference)
            if call == steps:  # the learner's last step
                jax.block_until_ready(result)
                done.append(time.perf_counter())
            return result

        captured["step"] = step
        return timed

    overrides = [
        f"train.steps={steps}",
        f"train.checkpoint_every={checkpoint_every}",
        f"train.out_dir={out_dir}",
        "train.progress=false",
        *REFERENCE,
    ]
    run = apply_overrides(preset(method), overrides)
    loop.compiled_step = recording
    try:
        with timed_parts(parts, counting) if parts is not None else contextlib.nullcontext():
            loop.train(run)
    finally:
        loop.compiled_step = real
    # The learner's steps (a reference trained first comes before), from the one after
    # the first log: the diagnostics' and the first checkpoint's one-off compilations
    # fall before it.
    calls = calls[-steps:][run.train.log_every :]
    size = run.data.super_batch_size
    # From the dispatch of the first timed step to the end of the last: a loop that
    # dispatches ahead of its steps is timed to the work done, not to its last dispatch.
    (end,) = done
    loop_rate = size * len(calls) / (end - calls[0])

    step, state = captured["step"], captured["state"]
    batch, reference = captured["batch"], captured["reference"]
    n = len(calls)
    if parts is not None:
        parts["timed_steps"] = parts.get("timed_steps", 0) + n
    jax.block_until_ready(step(state, batch, reference))  # warm: compiled already
    start = time.perf_counter()
    for _ in range(n):
        state, metrics, _ = step(state, batch, reference)
    jax.block_until_ready((state, metrics))
    bare_rate = size * n / (time.perf_counter() - start)
    return loop_rate, bare_rate, size


def per_step(totals: dict) -> dict:
    """`timed_parts`' totals per timed learner step, in milliseconds."""
    steps = totals["timed_steps"]
    return {
        name: {
            "calls_per_step": t["calls"] / steps,
            "wall_ms": 1e3 * t["wall"] / steps,
            "thread_cpu_ms": 1e3 * t["cpu"] / steps,
            "process_cpu_ms": 1e3 * t["process"] / steps if "process" in t else None,
        }
        for name, t in totals.items()
        if name != "timed_steps"
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=["iid", "acid"])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=50,
        help="checkpoint interval; one above --steps leaves only the final save, after the timing",
    )
    parser.add_argument("--quick", action="store_true", help="1 repeat of 40 steps")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the loop's host-side parts (PARTS) per learner step",
    )
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 40, 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        timings = {m: {"loop": [], "bare": []} for m in args.methods}
        parts = {m: {} if args.breakdown else None for m in args.methods}
        sizes = {}
        for repeat in range(args.repeats):
            for method in args.methods:
                out = pathlib.Path(tmp) / f"{method}-{repeat}"
                loop_rate, bare_rate, sizes[method] = timed_run(
                    method, args.steps, out, args.checkpoint_every, parts[method]
                )
                timings[method]["loop"].append(loop_rate)
                timings[method]["bare"].append(bare_rate)
                print(f"{method} repeat {repeat}: loop {loop_rate:.0f} ex/s, bare {bare_rate:.0f}")
        for method, t in timings.items():
            loop_rate, bare_rate = statistics.median(t["loop"]), statistics.median(t["bare"])
            # Each loop run against the bare run right after it: a paired ratio per repeat.
            paired = [1 - a / b for a, b in zip(t["loop"], t["bare"], strict=True)]
            row = {
                "method": method,
                "super_batch": sizes[method],
                "loop_examples_per_s": loop_rate,
                "bare_examples_per_s": bare_rate,
                "overhead": statistics.median(paired),
                "overhead_per_repeat": paired,
                "timings": t,
            }
            if args.breakdown:
                row["parts"] = per_step(parts[method])
            rows.append(row)
    print(f"{'method':8} {'loop ex/s':>10} {'bare ex/s':>10} {'overhead':>9}")
    for r in rows:
        print(
            f"{r['method']:8} {r['loop_examples_per_s']:10.0f} {r['bare_examples_per_s']:10.0f} "
            f"{100 * r['overhead']:8.1f}%"
        )
    for r in rows if args.breakdown else ():
        bare_ms = 1e3 * r["super_batch"] / r["bare_examples_per_s"]
        print(f"{r['method']}: per learner step (the bare step: {bare_ms:.1f} ms)")
        for name, p in r["parts"].items():
            every = p["process_cpu_ms"]
            print(
                f"  {name:12} {p['calls_per_step']:5.2f} calls {p['wall_ms']:6.2f} ms wall "
                f"{p['thread_cpu_ms']:6.2f} ms CPU of its thread"
                + ("" if every is None else f", {every:.2f} ms of all threads")
            )
    if args.out:
        record = {
            "rows": rows,
            "steps": args.steps,
            "repeats": args.repeats,
            "checkpoint_every": args.checkpoint_every,
            "machine": describe(),
            "jax": jax.__version__,
            "load_average": os.getloadavg(),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
