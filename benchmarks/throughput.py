"""Training examples/s of aced's steps against open_clip's on the same model and CPU.

The model: two-tower SigLIP, 28 px images with 3 channels, patch 7, both towers
width 128, depth 4, MLP 512, 4 heads, embedding 128, 16 tokens, vocabulary
1,000; mean-pooled images, last-token text, no attention mask, AdamW. Batch b
= 256 training examples per step.

- ``aced/iid``: `aced.train.step.make_train_step` for IID (f = 0);
  ``open_clip/siglip``: open_clip's ``CLIP`` model with ``SigLipLoss``, forward,
  backward and ``torch.optim.AdamW`` step.
- ``aced/kd``: KD with the softmax contrastive loss and softmax KD against a
  frozen teacher of the same shape; ``open_clip/distill``: open_clip's
  ``DistillClipLoss`` with the teacher's forward under ``torch.no_grad``.
- ``aced/acid`` and ``aced/aced``: the curated steps, scoring a super-batch of
  B = 512 (f = 0.5) with learner and reference to train on b = 256; open_clip
  has no counterpart, so their rate is printed against ``open_clip/siglip``:
  what curation costs per training example.

Every step is compiled (JAX) or warmed up (torch) first; then the programs take
turns ``--repeats`` times, each timing ``--steps`` consecutive steps, so that a
change in a shared machine's load falls on all of them alike. The table gives
the median examples/s of each and the ratio to its open_clip counterpart,
written with the machine, versions and load average to ``--out``.

open_clip and torch come from the optional ``bench`` extra, in an environment
of their own (see ``benchmarks/README.md``)::

    python benchmarks/throughput.py --out benchmarks/results/throughput.json
    python benchmarks/throughput.py --quick    # a smoke run: 2 repeats of 2 steps
"""

import argparse
import os
import statistics
import time

from machine import describe, launch, write_result

launch(__name__)

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

from aced.models import TwoTower, TwoTowerConfig  # noqa: E402
from aced.train.config import DistillConfig, OptimConfig, SelectionConfig, StepConfig  # noqa: E402
from aced.train.state import SuperBatch, init_train_state  # noqa: E402
from aced.train.step import make_train_step  # noqa: E402

IMAGE, PATCH, CHANNELS, WIDTH, DEPTH, MLP, HEADS = 28, 7, 3, 128, 4, 512, 4
EMBED, TOKENS, VOCAB, BATCH = 128, 16, 1000, 256
OPTIM = OptimConfig(learning_rate=1e-3, warmup_steps=0, grad_clip_norm=0.0, weight_decay=1e-4)


def aced_model_config() -> TwoTowerConfig:
    shape = {"width": WIDTH, "depth": DEPTH, "mlp_dim": MLP, "num_heads": HEADS}
    return TwoTowerConfig.from_variants(
        image_variant="mu/7",
        text_variant="mu",
        embed_dim=EMBED,
        image_size=IMAGE,
        vocab_size=VOCAB,
        max_len=TOKENS,
        image_overrides={**shape, "patch_size": PATCH, "channels": CHANNELS, "pool": "gap"},
        text_overrides=shape,
    )


def aced_step(method: str):
    """A zero-argument callable running one aced step of `method`, state kept inside."""
    curated = method in ("acid", "aced")
    super_batch = 2 * BATCH if curated else BATCH
    config = StepConfig(
        method=method,
        contrastive="softmax" if method == "kd" else "sigmoid",
        selection=SelectionConfig(filter_ratio=0.5 if curated else 0.0, n_chunks=4),
        distill=DistillConfig(
            weight=1.0 if method in ("kd", "aced") else 0.0,
            loss="softmax" if method == "kd" else "sigmoid",
        ),
        reference_embeddings="online",
        optim=OPTIM,
    )
    learner = TwoTower(aced_model_config(), key=jax.random.key(0))
    reference = TwoTower(aced_model_config(), key=jax.random.key(1))
    rng = np.random.default_rng(0)
    batch = SuperBatch(
        images=jax.numpy.asarray(
            rng.standard_normal((super_batch, IMAGE, IMAGE, CHANNELS), dtype=np.float32)
        ),
        tokens=jax.numpy.asarray(rng.integers(0, VOCAB, (super_batch, TOKENS), dtype=np.int32)),
        index=jax.numpy.arange(super_batch, dtype=jax.numpy.int32),
    )
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    step = make_train_step(config, mesh)
    box = {"state": init_train_state(learner, config, jax.random.key(3))}

    def run():
        box["state"], metrics = step(box["state"], batch, reference)
        return metrics

    def sync(metrics):
        jax.block_until_ready(metrics)

    # The step's jaxpr, for `benchmarks/matmul_floor.py`.
    run.jaxpr = lambda: eqx.filter_make_jaxpr(step)(box["state"], batch, reference)[0]

    params = sum(x.size for x in jax.tree.leaves(learner) if isinstance(x, jax.Array))
    return run, sync, params


def open_clip_step(kind: str):
    """The same for open_clip: ``siglip`` or ``distill`` (a frozen teacher of the same shape)."""
    import open_clip
    import torch
    from open_clip.loss import DistillClipLoss, SigLipLoss

    torch.manual_seed(0)
    vision = open_clip.CLIPVisionCfg(
        layers=DEPTH,
        width=WIDTH,
        head_width=WIDTH // HEADS,
        mlp_ratio=MLP / WIDTH,
        patch_size=PATCH,
        image_size=IMAGE,
        pool_type="avg",
        no_ln_pre=True,
    )
    text = open_clip.CLIPTextCfg(
        context_length=TOKENS,
        vocab_size=VOCAB,
        width=WIDTH,
        heads=HEADS,
        layers=DEPTH,
        pool_type="last",
        no_causal_mask=True,
    )
    siglip = kind == "siglip"
    extra = {"init_logit_bias": -10.0} if siglip else {}
    model = open_clip.CLIP(EMBED, vision, text, output_dict=True, **extra)
    teacher = None if siglip else open_clip.CLIP(EMBED, vision, text, output_dict=True).eval()
    loss_fn = SigLipLoss() if siglip else DistillClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    images = torch.randn(BATCH, CHANNELS, IMAGE, IMAGE)
    tokens = torch.randint(0, VOCAB, (BATCH, TOKENS))

    def run():
        out = model(images, tokens)
        if siglip:
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"],
                           out["logit_bias"])  # fmt: skip
        else:
            with torch.no_grad():
                t = teacher(images, tokens)
            loss = sum(loss_fn(out["image_features"], out["text_features"], out["logit_scale"],
                               t["image_features"], t["text_features"], t["logit_scale"]))  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    def sync(loss):
        loss.item()

    params = sum(p.numel() for p in model.parameters())
    return run, sync, params


def time_steps(run, sync, steps: int) -> float:
    """Seconds per step over `steps` consecutive steps, synchronised at the end."""
    start = time.perf_counter()
    for _ in range(steps):
        out = run()
    sync(out)
    return (time.perf_counter() - start) / steps


PAIRS = {"aced/iid": "open_clip/siglip", "aced/kd": "open_clip/distill",
         "aced/acid": "open_clip/siglip", "aced/aced": "open_clip/siglip"}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="consecutive steps per timing")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--quick", action="store_true", help="2 repeats of 2 steps")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    repeats, steps = (2, 2) if args.quick else (args.repeats, args.steps)
    import open_clip
    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    programs = {f"aced/{m}": aced_step(m) for m in ("iid", "kd", "acid", "aced")}
    programs |= {f"open_clip/{k}": open_clip_step(k) for k in ("siglip", "distill")}
    for run, sync, _ in programs.values():  # compile / warm up
        sync(run())
        sync(run())
    seconds = {name: [] for name in programs}
    for _ in range(repeats):
        for name, (run, sync, _) in programs.items():
            seconds[name].append(time_steps(run, sync, steps))
    rate = {name: BATCH / statistics.median(s) for name, s in seconds.items()}
    rows = []
    print(f"{'program':20s} {'params':>9s} {'examples/s':>11s}  vs open_clip")
    for name, (_, _, params) in programs.items():
        other = PAIRS.get(name)
        ratio = rate[name] / rate[other] if other else None
        rows.append({"program": name, "params": params, "examples_per_s": rate[name],
                     "seconds_per_step": seconds[name], "against": other, "ratio": ratio})  # fmt: skip
        shown = f"{ratio:.2f}x {other}" if other else ""
        print(f"{name:20s} {params:9d} {rate[name]:11.1f}  {shown}")
    result = {
        "rows": rows,
        "batch": BATCH,
        "repeats": repeats,
        "steps_per_timing": steps,
        "torch_threads": args.threads,
        "machine": describe(),
        "versions": {
            "jax": jax.__version__,
            "torch": torch.__version__,
            "open_clip": open_clip.__version__,
        },  # fmt: skip
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    if args.out:
        write_result(result, args.out)


if __name__ == "__main__":
    main()
