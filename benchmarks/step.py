"""Training-step time by part, and the step's FLOP/s against this machine's matmul peak.

For each method (iid, kd, acid, aced) the script times, on one CPU device:

- ``scoring``: the learner and the reference embedding the super-batch (B)
  with no gradient, as `aced.train.step.curate` does (KD: the teacher
  embedding the sub-batch b instead, as `train_step` does without selection);
- ``selection``: `aced.train.step.select_indices` on those embeddings (IID / KD:
  the random permutation that draws the sub-batch);
- ``update``: `aced.train.step.learner_update`, the learner's forward +
  backward + optax update on the b selected examples;
- ``step``: the whole jitted `make_train_step`, and ``other`` = step - parts
  (gathers, metrics, what XLA does differently when it sees the whole step).

Each function is compiled ahead of time (compilation excluded) and called once
to warm up; then the parts, the step and the peak matmul (a jitted f32
2048 x 2048 x 2048 product) take turns ``--repeats`` times, each call timed
with ``jax.block_until_ready``, so that a change in the load of a shared
machine falls on all of them alike. The table gives medians. Achieved FLOP/s =
the analytic count (`aced.train.step.step_flops`: matrix products only) /
median step time, also as a fraction of the peak measured alongside; the run
starts with the speed of the K = 64 / 128 products these small towers are made
of. The load average (``os.getloadavg``) before and after is printed and saved.

A second run at B = 4096 gives selection's share of the ACID step (16 chunks;
f = 0.8125, so that b = 768 splits into 16 chunks). ``--profile`` traces one
ACID step with ``jax.profiler`` and splits its time by kind of XLA operation.

Usage::

    python benchmarks/step.py --out results/step.json --profile
    python benchmarks/step.py --quick                 # smoke run, B = 160
    python benchmarks/step.py --chunk-tokens 1000000  # inference in one vmap per batch
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time

from machine import describe, launch

launch(__name__)

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

from aced.data.scenes import SceneConfig  # noqa: E402
from aced.models import TwoTower, TwoTowerConfig, two_tower  # noqa: E402
from aced.selection import Embedded  # noqa: E402
from aced.train.config import METHODS, preset, updated  # noqa: E402
from aced.train.curation import embedded, reference_view, select_indices  # noqa: E402
from aced.train.sharding import embed_sharded  # noqa: E402
from aced.train.state import SuperBatch, init_train_state  # noqa: E402
from aced.train.step import learner_update, make_train_step, step_flops  # noqa: E402

LEARNER = ("mu/7", "mu")
REFERENCE = ("nano/7", "nano")
EMBED_DIM = 64
IMAGE_SIZE = 56  # the built-in scenes
CHANNELS = 1
MAX_LEN = SceneConfig().max_caption_tokens  # the built-in tokenizer's row length (39)
VOCAB = 128  # embedding look-ups cost no FLOPs; the size does not matter here
SUPER_BATCH, QUICK_SUPER_BATCH = 1280, 160
SHARE_BATCH, SHARE_FILTER = 4096, 0.8125  # b = 768 (quick: B = 512, b = 96)
PEAK_SHAPE = (2048, 2048, 2048)
# (M, K, N) of the towers' own products: nano fc1 / qkv on 512 images, mu fc1.
SMALL_SHAPES = ((32768, 128, 512), (32768, 128, 128), (32768, 64, 256))


def tower_config(variants: tuple[str, str]) -> TwoTowerConfig:
    return TwoTowerConfig.from_variants(
        image_variant=variants[0],
        text_variant=variants[1],
        embed_dim=EMBED_DIM,
        image_size=IMAGE_SIZE,
        vocab_size=VOCAB,
        max_len=MAX_LEN,
        image_overrides={"channels": CHANNELS},
    )


def compile_ahead(fn, args) -> tuple:
    """``(compiled, args, compile seconds)``: jit `fn` for `args` ahead of time."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, args, time.perf_counter() - start


def round_robin(calls: dict, repeats: int) -> dict:
    """Median and best wall seconds of each compiled call.

    Every call runs once to warm up, then the calls take turns `repeats` times,
    so that a change in the machine's load falls on all of them alike.
    """
    for compiled, args, _ in calls.values():
        jax.block_until_ready(compiled(*args))
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (compiled, args, _) in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times[name].append(time.perf_counter() - start)
    return {
        name: {"median_s": statistics.median(t), "min_s": min(t), "compile_s": calls[name][2]}
        for name, t in times.items()
    }


def matmul_call(shape: tuple[int, int, int]) -> tuple:
    """A compiled f32 (M, K) @ (K, N) product and its operands."""
    m, k, n = shape
    a = jax.random.normal(jax.random.key(0), (m, k), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (k, n), jnp.float32)
    return compile_ahead(lambda a, b: a @ b, (a, b))


def gflops(shape: tuple[int, int, int], seconds: float) -> float:
    m, k, n = shape
    return 2 * m * k * n / seconds / 1e9


def make_problem(super_batch: int):
    learner = TwoTower(tower_config(LEARNER), key=jax.random.key(0))
    reference = TwoTower(tower_config(REFERENCE), key=jax.random.key(1))
    rng = np.random.default_rng(0)
    batch = SuperBatch(
        images=jnp.asarray(rng.standard_normal(
            (super_batch, IMAGE_SIZE, IMAGE_SIZE, CHANNELS), dtype=np.float32)),
        tokens=jnp.asarray(rng.integers(0, VOCAB, (super_batch, MAX_LEN), dtype=np.int32)),
        index=jnp.arange(super_batch, dtype=jnp.int32),
    )  # fmt: skip
    return learner, reference, batch


def part_functions(config, mesh, super_batch: int, sub_batch: int):
    """The step's parts as jittable functions with the shapes they have inside the step."""

    def scoring(learner, reference, batch):
        if not config.uses_selection:  # KD's online teacher embeds the sub-batch only
            images, tokens = batch.images[:sub_batch], batch.tokens[:sub_batch]
            return embedded(reference, *embed_sharded(reference, images, tokens, mesh)), None
        learner = jax.lax.stop_gradient(learner)
        view = embedded(learner, *embed_sharded(learner, batch.images, batch.tokens, mesh))
        return view, reference_view(reference, batch, config, mesh)

    def selection(key, learner_view=None, reference_view=None):
        if not config.uses_selection:
            return jax.random.permutation(key, super_batch)[:sub_batch].astype(jnp.int32)
        return select_indices(key, learner_view, reference_view, sub_batch, config)

    def update(state, images, tokens, teacher):
        return learner_update(state, images, tokens, teacher, None, None, config, mesh)

    return scoring, selection, update


def bench_config(method: str, filter_ratio: float = 0.8):
    """The method preset's step, with the reference embedded online (its forward is timed)."""
    return updated(
        preset(method).step,
        {"selection.filter_ratio": filter_ratio, "reference_embeddings": "online"},
    )


def bench_method(
    method: str, super_batch: int, repeats: int, mesh, filter_ratio: float = 0.8
) -> dict:
    """Time one method's parts, whole step and the peak matmul, taking turns."""
    config = bench_config(method, filter_ratio)
    b = config.sub_batch_size(super_batch)
    learner, reference, batch = make_problem(super_batch)
    state = init_train_state(learner, config, jax.random.key(3))
    flops = step_flops(learner.config, reference.config, config, super_batch)
    row = {"method": method, "B": super_batch, "b": b, "filter_ratio": filter_ratio,
           "flops": flops}  # fmt: skip
    calls = {"peak": matmul_call(PEAK_SHAPE)}
    scoring, selection, update = part_functions(config, mesh, super_batch, b)
    key, views = jax.random.key(5), ()
    if method != "iid":
        calls["scoring"] = compile_ahead(scoring, (learner, reference, batch))
        views = jax.jit(scoring)(learner, reference, batch)
    selection_args = (key, *views) if config.uses_selection else (key,)
    calls["selection"] = compile_ahead(selection, selection_args)
    teacher = None
    if config.uses_kd:  # the teacher's view of b examples (from scoring: B rows, KD: b rows)
        view = views[1] if config.uses_selection else views[0]
        teacher = Embedded(view.zimg[:b], view.ztxt[:b], view.t, view.b)
    calls["update"] = compile_ahead(update, (state, batch.images[:b], batch.tokens[:b], teacher))
    step = make_train_step(config, mesh)
    calls["step"] = compile_ahead(lambda s, bt, r: step(s, bt, r), (state, batch, reference))
    timings = round_robin(calls, repeats)
    row["peak_gflops"] = gflops(PEAK_SHAPE, timings.pop("peak")["median_s"])
    row["timings"] = timings
    return row


def summarise(row: dict) -> dict:
    """Per-part FLOPs, seconds, GFLOP/s and the step's fraction of the matmul peak
    measured alongside it."""
    f, t = row["flops"], row["timings"]
    part_flops = {
        "scoring": f["scoring_learner"] + f["scoring_reference"] + f["teacher"],
        "selection": f["selection"],
        "update": f["update"] + f["losses"],
        "step": f["total"],
    }
    out = {}
    for name, timing in t.items():
        seconds = timing["median_s"]
        out[name] = {"s": seconds, "gflops": part_flops[name] / seconds / 1e9,
                     "gflop": part_flops[name] / 1e9}  # fmt: skip
    if len(t) > 1:
        out["other"] = {"s": t["step"]["median_s"] - sum(
            v["median_s"] for k, v in t.items() if k != "step")}  # fmt: skip
    out["step"]["fraction_of_peak"] = out["step"]["gflops"] / row["peak_gflops"]
    return out


# ---------------------------------------------------------------------------
# Profile: where an ACID step's time goes, by kind of XLA operation.

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (?:\([^=]*?\)|\S+) ([\w\-]+)\((.*)$")
_COMPUTATION = re.compile(r"^%([\w.\-]+) \(")


def parse_hlo(text: str) -> tuple[dict, dict]:
    """``{instruction: (opcode, called computation)}`` and ``{computation: opcodes}``."""
    instructions, computations, current = {}, collections.defaultdict(list), None
    for line in text.splitlines():
        head = _COMPUTATION.match(line)
        if head:
            current = head.group(1)
            continue
        m = _INSTRUCTION.match(line)
        if m:
            called = re.search(r"calls=%([\w.\-]+)", m.group(3))
            instructions[m.group(1)] = (m.group(2), called.group(1) if called else None)
            if current:
                computations[current].append(m.group(2))
    return instructions, computations


def op_kind(opcode: str, body: list[str]) -> str:
    """A coarse category of one executed XLA instruction (a fusion is judged by its body)."""
    ops = set(body) if opcode == "fusion" else {opcode}
    if "dot" in ops or "convolution" in ops:
        return "attention (batched matmul + softmax)" if "exponential" in ops else "matmul"
    if "tanh" in ops:
        return "gelu (tanh)"
    if "exponential" in ops:
        return "softmax / exp"
    if "rsqrt" in ops or "sqrt" in ops:
        return "layernorm / l2-norm"
    if ops & {"sort", "gather", "scatter", "dynamic-update-slice", "rng-bit-generator", "iota"}:
        return "selection (sort, gather, rng)"
    if ops <= {
        "transpose",
        "copy",
        "bitcast",
        "reshape",
        "broadcast",
        "slice",
        "concatenate",
        "dynamic-slice",
        "parameter",
        "constant",
        "tuple",
        "get-tuple-element",
    }:
        return "layout (transpose, copy, slice)"
    if "reduce" in ops:
        return "reductions"
    return "other elementwise (bias, residual, scaling)"


def profile_step(method: str, super_batch: int, mesh) -> dict:
    """Trace two steps; sum each executed instruction's time by `op_kind`."""
    config = bench_config(method)
    learner, reference, batch = make_problem(super_batch)
    state = init_train_state(learner, config, jax.random.key(3))
    step = make_train_step(config, mesh)
    compiled = jax.jit(lambda s, bt, r: step(s, bt, r)).lower(state, batch, reference).compile()
    instructions, computations = parse_hlo(compiled.as_text())
    jax.block_until_ready(compiled(state, batch, reference))
    reps = 2
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(reps):
                jax.block_until_ready(compiled(state, batch, reference))
        (path,) = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
        with gzip.open(path) as f:
            events = json.load(f)["traceEvents"]
    by_kind = collections.Counter()
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or name not in instructions:
            continue
        opcode, called = instructions[name]
        if opcode in ("while", "conditional", "call"):
            continue  # their bodies' instructions are counted themselves
        by_kind[op_kind(opcode, computations.get(called, []))] += event.get("dur", 0) / 1e6 / reps
    total = sum(by_kind.values())
    flops = step_flops(learner.config, reference.config, config, super_batch)["total"]
    return {
        "method": method, "B": super_batch, "op_seconds": total,
        "kinds": {k: {"s": v, "share": v / total} for k, v in by_kind.most_common()},
        "matmul_gflops": flops / (by_kind["matmul"] + by_kind["attention (batched matmul + softmax)"]) / 1e9,
    }  # fmt: skip


# ---------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"smoke run, B = {QUICK_SUPER_BATCH}")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--super-batch", type=int, default=None, help="B of the per-part table")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per function")
    parser.add_argument("--no-share", action="store_true", help=f"skip the B = {SHARE_BATCH} run")
    parser.add_argument("--profile", action="store_true", help="op-kind profile of one ACID step")
    parser.add_argument(
        "--chunk-tokens", type=int, default=None,
        help="tokens the towers embed at once on CPU (aced.models.two_tower.CPU_CHUNK_TOKENS); "
        "a huge value embeds each batch in one vmap",
    )  # fmt: skip
    args = parser.parse_args()
    if args.chunk_tokens is not None:
        two_tower.CPU_CHUNK_TOKENS = args.chunk_tokens

    quick = args.quick
    super_batch = args.super_batch or (QUICK_SUPER_BATCH if quick else SUPER_BATCH)
    repeats = args.repeats or (2 if quick else 5)
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    load_before = os.getloadavg()

    shapes = (PEAK_SHAPE, *SMALL_SHAPES)
    speeds = round_robin({s: matmul_call(s) for s in shapes}, repeats)
    matmuls = [{"shape": list(s), "gflops": gflops(s, speeds[s]["median_s"]),
                "best_gflops": gflops(s, speeds[s]["min_s"])} for s in shapes]  # fmt: skip
    print(json.dumps({"matmul_gflops": {"x".join(map(str, m["shape"])): round(m["gflops"], 1)
                                        for m in matmuls}}), flush=True)  # fmt: skip

    rows = []
    for method in args.methods:
        row = bench_method(method, super_batch, repeats, mesh)
        row["summary"] = summarise(row)
        rows.append(row)
        print(json.dumps({"method": method, "peak_gflops": round(row["peak_gflops"], 1),
                          **{k: round(v["s"], 3) for k, v in row["summary"].items()}}),
              flush=True)  # fmt: skip

    share = None
    if not args.no_share:
        share_batch = 512 if quick else SHARE_BATCH
        row = bench_method("acid", share_batch, max(2, repeats - 2), mesh, SHARE_FILTER)
        row["summary"] = summarise(row)
        t = row["summary"]
        share = {"row": row, "selection_share": t["selection"]["s"] / t["step"]["s"]}
        print(json.dumps({"B": share_batch, "selection_s": round(t["selection"]["s"], 3),
                          "step_s": round(t["step"]["s"], 3),
                          "share": round(share["selection_share"], 4)}), flush=True)  # fmt: skip

    profile = profile_step("acid", super_batch, mesh) if args.profile else None
    load_after = os.getloadavg()

    print()
    print(f"learner {LEARNER[0]} + {LEARNER[1]}, reference {REFERENCE[0]} + {REFERENCE[1]}, "
          f"D={EMBED_DIM}, {IMAGE_SIZE}x{IMAGE_SIZE}x{CHANNELS} images, L={MAX_LEN} tokens, "
          f"16 chunks, float32, 1 device, {os.cpu_count()} cores, "
          f"CPU_CHUNK_TOKENS={two_tower.CPU_CHUNK_TOKENS}, load average "
          f"{load_before[0]:.2f} before / {load_after[0]:.2f} after; median of {repeats} calls")  # fmt: skip
    print("f32 matmul GFLOP/s: " + ", ".join(
        f"{'x'.join(map(str, m['shape']))}: {m['gflops']:.1f}" for m in matmuls))  # fmt: skip
    print()
    print("| method | B | b | scoring s | selection s | update s | other s | step s "
          "| step GFLOP | GFLOP/s | peak GFLOP/s | of peak |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows + ([share["row"]] if share else []):
        s = row["summary"]
        cell = lambda k: f"{s[k]['s']:.3f}" if k in s else "–"  # noqa: E731
        print(f"| {row['method']} | {row['B']} | {row['b']} | {cell('scoring')} | "
              f"{cell('selection')} | {cell('update')} | {cell('other')} | {cell('step')} | "
              f"{s['step']['gflop']:.1f} | {s['step']['gflops']:.1f} | {row['peak_gflops']:.1f} | "
              f"{100 * s['step']['fraction_of_peak']:.0f} % |")  # fmt: skip
    if share:
        print(f"\nselection / ACID step at B={share['row']['B']} (f={SHARE_FILTER}): "
              f"{100 * share['selection_share']:.1f} %")  # fmt: skip
    if profile:
        print(f"\nACID step at B={profile['B']}, time by kind of XLA operation "
              f"(jax.profiler; {profile['op_seconds']:.3f} s of ops; the step's matmul FLOPs "
              f"over the matmul kinds' time: {profile['matmul_gflops']:.1f} GFLOP/s):")  # fmt: skip
        print("| kind | s | share |")
        print("|---|---:|---:|")
        for kind, v in profile["kinds"].items():
            print(f"| {kind} | {v['s']:.3f} | {100 * v['share']:.1f} % |")

    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        meta = {
            "command": " ".join(["python", "benchmarks/step.py", *sys.argv[1:]]),
            "learner": LEARNER, "reference": REFERENCE, "embed_dim": EMBED_DIM,
            "image": [IMAGE_SIZE, IMAGE_SIZE, CHANNELS], "max_len": MAX_LEN,
            "repeats": repeats, "cpu_count": os.cpu_count(),
            "chunk_tokens": two_tower.CPU_CHUNK_TOKENS,
            "machine": describe(),
            "load_average_before": load_before, "load_average_after": load_after,
        }  # fmt: skip
        result = {"config": meta, "matmuls": matmuls, "rows": rows,
                  "selection_share": share, "profile": profile}  # fmt: skip
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2, default=float)
            f.write("\n")


if __name__ == "__main__":
    main()
