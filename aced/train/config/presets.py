"""The one preset table: named runs, built with `dataclasses.replace`.

The method presets (``iid``, ``kd``, ``acid``, ``aced``) share one step: f =
0.75 (b = 64 of B = 256 for every method), peak learning rate 3e-3, and
cached reference embeddings for the methods that read a reference (KD, ACID,
ACED); ACID and ACED score with learnability and JEST sampling over 16
chunks, KD and ACED distil with softmax KD, lambda = 1. ``smoke`` is ACED at
toy scale, ``reference`` trains a reference on the curated split.
`reference_run` derives the run that trains a run's reference when none is
given.
"""

import pathlib
from collections.abc import Callable
from dataclasses import replace

from aced.train.config.run import DataConfig, ModelConfig, ReferenceConfig, RunConfig, TrainConfig
from aced.train.config.step import METHODS, DistillConfig, OptimConfig, SelectionConfig, StepConfig


def method_step(method: str) -> StepConfig:
    """The step of the method presets (see the module docstring)."""
    distils, curates = METHODS[method].distils, METHODS[method].curates
    return StepConfig(
        method=method,
        selection=SelectionConfig(filter_ratio=0.75),
        distill=DistillConfig(weight=1.0 if distils else 0.0),
        reference_embeddings="cached" if (curates or distils) else "online",
        optim=OptimConfig(learning_rate=3e-3),
    )


def _method(method: str) -> RunConfig:
    return RunConfig(step=method_step(method), train=TrainConfig(out_dir=f"runs/{method}"))


def _smoke() -> RunConfig:
    step = method_step("aced")
    step = replace(
        step,
        selection=replace(step.selection, filter_ratio=0.5, n_chunks=4),
        optim=OptimConfig(warmup_steps=5),
    )
    return RunConfig(
        step=step,
        data=DataConfig(size=2048, super_batch_size=64),
        train=TrainConfig(
            steps=20,
            log_every=5,
            checkpoint_every=10,
            eval_per_task=40,
            eval_retrieval_size=40,
            eval_batch_size=200,
            out_dir="runs/smoke",
        ),
        reference=ReferenceConfig(
            image_variant="mu/7",
            text_variant="mu",
            train_steps=20,
            curated_size=1024,
            super_batch_size=32,
            warmup_steps=5,
        ),
    )


def _reference() -> RunConfig:
    ref = ReferenceConfig()
    return RunConfig(
        step=StepConfig(
            method="iid",
            selection=SelectionConfig(filter_ratio=0.0),
            optim=OptimConfig(learning_rate=ref.learning_rate),
        ),
        model=ModelConfig(image_variant=ref.image_variant, text_variant=ref.text_variant),
        data=DataConfig(
            split="curated", size=ref.curated_size, super_batch_size=ref.super_batch_size
        ),
        train=TrainConfig(steps=ref.train_steps, out_dir="runs/reference"),
    )


PRESETS: dict[str, tuple[Callable[[], RunConfig], str]] = {
    "smoke": (_smoke, "ACED end to end at toy scale, reference included (about a minute on CPU)"),
    "iid": (lambda: _method("iid"), "baseline: a uniformly drawn sub-batch"),
    "kd": (lambda: _method("kd"), "baseline: IID sub-batch + distillation from the reference"),
    "acid": (lambda: _method("acid"), "curated sub-batch (learnability, joint selection)"),
    "aced": (lambda: _method("aced"), "curated sub-batch + distillation: the paper's method"),
    "reference": (_reference, "train a reference (IID on the whole batch) on the curated split"),
}


def preset(name: str) -> RunConfig:
    """The `RunConfig` of a named preset (see `PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name][0]()


def reference_run(run: RunConfig) -> RunConfig:
    """The run that trains `run`'s reference when ``reference.path`` is none.

    The `reference` preset (IID on the whole batch of the curated split), with
    the towers, size and schedule of ``run.reference``, the learner's inputs
    (image size, channels, tokenizer) and the run directory
    ``<run.train.out_dir>/reference``.
    """
    ref, base = run.reference, preset("reference")
    if run.data.source != "builtin":
        raise ValueError(
            f"data.source={run.data.source!r}: a reference can be trained here only on the "
            "built-in curated split; set reference.path to a reference model or run directory"
        )
    optim = replace(base.step.optim, learning_rate=ref.learning_rate, warmup_steps=ref.warmup_steps)
    model = ModelConfig(
        image_variant=ref.image_variant,
        text_variant=ref.text_variant,
        embed_dim=run.model.embed_dim if ref.embed_dim is None else ref.embed_dim,
        image_size=run.model.image_size,
        channels=run.model.channels,
        max_len=run.model.max_len,
    )
    data = replace(
        run.data, split="curated", size=ref.curated_size, super_batch_size=ref.super_batch_size
    )
    train = replace(
        run.train,
        steps=ref.train_steps,
        eval_every=0,
        checkpoint_every=min(run.train.checkpoint_every, ref.train_steps),
        out_dir=str(pathlib.Path(run.train.out_dir) / "reference"),
    )
    return RunConfig(
        step=replace(base.step, optim=optim), model=model, data=data, train=train, reference=ref
    )
