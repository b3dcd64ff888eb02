"""The full run configuration: the step (method, losses, optimiser) plus model, data, loop, reference.

``RunConfig`` is a tree of frozen, keyword-only, validated dataclasses in the
style of `aced.train.config`, whose ``config_fields`` lists its leaves with
their help. `override` applies ``key=value`` strings all at once (the order
does not matter), as ``aced train --preset aced step.selection.filter_ratio=0.5
train.steps=100`` does. ``PRESETS`` names the ready-made runs; `reference_run`
derives the run that trains a reference when none is given; ``to_dict`` /
``from_dict`` turn a config into JSON and back (checkpoints store it).
"""

import dataclasses
import pathlib
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from aced.models import TwoTowerConfig, decode_variant
from aced.train.config import (
    StepConfig,
    _check_literals,
    _check_positive,
    _help,
    apply_overrides,
    config_fields,
    method_preset,
)

# The built-in scenes are 2 x 2 cells of 28 pixels (aced.data.SceneConfig()).
BUILTIN_IMAGE_SIZE = 56
FILE_SOURCES = ("parquet", "imagefolder", "webdataset", "csv")

__all__ = [
    "DataConfig",
    "LoopConfig",
    "ModelConfig",
    "PRESETS",
    "ReferenceConfig",
    "RunConfig",
    "apply_overrides",
    "config_fields",
    "from_dict",
    "method_step",
    "override",
    "preset",
    "reference_run",
    "to_dict",
]


def _check_tower(name: str, variant: str, image_size: int | None) -> None:
    params = decode_variant(variant)  # raises on an unknown size
    if image_size is None:
        if "patch_size" in params:
            raise ValueError(f"{name}={variant!r} is a text tower: drop the '/patch' suffix")
        return
    if "patch_size" not in params:
        raise ValueError(f"{name}={variant!r} names no patch size: write e.g. '{variant}/7'")
    if image_size % params["patch_size"]:
        raise ValueError(
            f"{name}={variant!r}: patch size {params['patch_size']} does not divide "
            f"model.image_size={image_size}; pick a patch size that divides it"
        )


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The learner: two towers projected to one embedding width."""

    image_variant: str = _help("image tower, size/patch (aced.models.variants): mu/7, nano/7, S/16", default="mu/7")
    text_variant: str = _help("text tower size: mu, nano, S", default="mu")
    embed_dim: int = _help("D: width of the shared image-text embedding space", default=64)
    image_size: int = _help("input image side in pixels (56 for the built-in scenes)", default=BUILTIN_IMAGE_SIZE)
    channels: int = _help("input channels (1: grey, as the built-in scenes; 3: RGB)", default=1)
    max_len: int | None = _help("L: tokens per caption (none: the tokenizer's own length)", default=None)

    def __post_init__(self) -> None:
        _check_positive("model.embed_dim", self.embed_dim)
        _check_positive("model.image_size", self.image_size)
        if self.channels not in (1, 3):
            raise ValueError(f"model.channels={self.channels} must be 1 or 3")
        if self.max_len is not None and self.max_len < 2:
            raise ValueError(f"model.max_len={self.max_len} must be >= 2 (one word and <eos>), or none")
        _check_tower("model.image_variant", self.image_variant, self.image_size)
        _check_tower("model.text_variant", self.text_variant, None)

    def two_tower(self, *, vocab_size: int, max_len: int) -> TwoTowerConfig:
        """The `TwoTowerConfig` of this model for a tokenizer's vocabulary and length."""
        return TwoTowerConfig.from_variants(
            image_variant=self.image_variant,
            text_variant=self.text_variant,
            embed_dim=self.embed_dim,
            image_size=self.image_size,
            vocab_size=vocab_size,
            max_len=max_len,
            image_overrides={"channels": self.channels},
        )


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the training examples come from and how they are batched."""

    source: Literal["builtin", "parquet", "imagefolder", "webdataset", "csv"] = _help(
        "builtin: Fashion-MNIST scenes made in memory; or files read with HF datasets", default="builtin"
    )
    split: Literal["web", "curated"] = _help(
        "built-in split: web (noisy, the learner's data) or curated (clean, references)", default="web"
    )
    size: int = _help("built-in scenes to make for the split", default=10000)
    path: str | None = _help("files (parquet/csv/webdataset, globs allowed) or folder (imagefolder)", default=None)
    image_column: str | None = _help("image column of parquet / csv data (none: the format's default)", default=None)
    caption_column: str | None = _help(
        "caption column of parquet / csv / imagefolder data (none: the format's default)", default=None
    )
    tokenizer: str | None = _help(
        "tokenizer.json to use (none: the built-in word tokenizer of the scene captions)", default=None
    )
    super_batch_size: int = _help("B: examples drawn per step, before selection", default=256)
    seed: int = _help("seed of the scenes and of the shuffling", default=0)

    def __post_init__(self) -> None:
        _check_literals(self)
        _check_positive("data.size", self.size)
        _check_positive("data.super_batch_size", self.super_batch_size)
        if self.source in FILE_SOURCES and not self.path:
            raise ValueError(f"data.source={self.source!r} reads files: set data.path=<files or folder>")
        if self.source == "builtin" and self.super_batch_size > self.size:
            raise ValueError(
                f"data.super_batch_size={self.super_batch_size} exceeds the dataset's "
                f"data.size={self.size} examples; lower the super-batch or raise data.size"
            )


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """Length of the run, logging, evaluation and checkpoints."""

    steps: int = _help("training steps", default=300)
    log_every: int = _help("write metrics every this many steps", default=10)
    eval_every: int = _help("evaluate every this many steps (0: only at the end)", default=0)
    eval_per_task: int = _help("images per zero-shot task of the evaluation suite", default=200)
    eval_retrieval_size: int = _help("image-caption pairs of the retrieval evaluation", default=500)
    eval_batch_size: int = _help("rows per embedding call during evaluation", default=500)
    checkpoint_every: int = _help("save a checkpoint every this many steps (and at the end)", default=100)
    keep_checkpoints: int = _help("checkpoints kept on disk (the latest ones)", default=2)
    out_dir: str = _help("run directory: checkpoints, metrics.jsonl, TensorBoard events, model", default="runs/aced")
    seed: int = _help("seed of the learner's initialisation and of the step's randomness", default=0)
    progress: bool = _help("show a tqdm progress bar", default=True)

    def __post_init__(self) -> None:
        _check_positive("train.steps", self.steps)
        _check_positive("train.log_every", self.log_every)
        _check_positive("train.eval_every", self.eval_every, zero_ok=True)
        _check_positive("train.eval_per_task", self.eval_per_task)
        _check_positive("train.eval_batch_size", self.eval_batch_size)
        _check_positive("train.checkpoint_every", self.checkpoint_every)
        _check_positive("train.keep_checkpoints", self.keep_checkpoints)
        if self.eval_retrieval_size < 5:
            raise ValueError(f"train.eval_retrieval_size={self.eval_retrieval_size} must be >= 5 (recall@5)")
        if not self.out_dir:
            raise ValueError("train.out_dir is empty: name the run directory")


@dataclass(frozen=True, kw_only=True)
class ReferenceConfig:
    """The frozen reference (the teacher in KD / ACED): loaded, or trained on curated data first."""

    path: str | None = _help(
        "a model directory (config.json + model.safetensors) or a run directory with checkpoints; "
        "none: train one on the curated split first, under <out_dir>/reference",
        default=None,
    )
    image_variant: str = _help("image tower of a reference trained here", default="mu/7")
    text_variant: str = _help("text tower of a reference trained here", default="mu")
    embed_dim: int | None = _help("D of a reference trained here (none: the learner's)", default=None)
    train_steps: int = _help("steps of a reference trained here", default=300)
    curated_size: int = _help("curated scenes a reference trained here learns from", default=10000)
    super_batch_size: int = _help("batch of a reference trained here (it trains on all of it)", default=128)
    learning_rate: float = _help("peak learning rate of a reference trained here", default=3e-3)
    warmup_steps: int = _help("learning-rate warm-up of a reference trained here", default=50)

    def __post_init__(self) -> None:
        if "patch_size" not in decode_variant(self.image_variant):
            raise ValueError(
                f"reference.image_variant={self.image_variant!r} names no patch size: write e.g. "
                f"'{self.image_variant}/7'"
            )
        _check_tower("reference.text_variant", self.text_variant, None)
        if self.embed_dim is not None:
            _check_positive("reference.embed_dim", self.embed_dim)
        _check_positive("reference.train_steps", self.train_steps)
        _check_positive("reference.curated_size", self.curated_size)
        _check_positive("reference.super_batch_size", self.super_batch_size)
        _check_positive("reference.learning_rate", self.learning_rate)
        _check_positive("reference.warmup_steps", self.warmup_steps, zero_ok=True)
        if self.super_batch_size > self.curated_size:
            raise ValueError(
                f"reference.super_batch_size={self.super_batch_size} exceeds "
                f"reference.curated_size={self.curated_size}; lower it or raise the curated size"
            )


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything `aced.train.loop.train` needs; ``aced train --help`` lists every field."""

    step: StepConfig = _help("method, losses and optimiser", default_factory=lambda: method_step("aced"))
    model: ModelConfig = _help("the learner", default_factory=ModelConfig)
    data: DataConfig = _help("training data", default_factory=DataConfig)
    train: LoopConfig = _help("loop, logging, evaluation, checkpoints", default_factory=LoopConfig)
    reference: ReferenceConfig = _help("reference / teacher", default_factory=ReferenceConfig)

    def __post_init__(self) -> None:
        from aced.train.step import check_step_shapes

        # The device-independent part of the batch geometry, eagerly (the
        # device count is checked again when the mesh is known).
        check_step_shapes(self.step, self.data.super_batch_size, 1)
        if self.data.source == "builtin" and self.model.image_size != BUILTIN_IMAGE_SIZE:
            raise ValueError(
                f"model.image_size={self.model.image_size} but the built-in scenes are "
                f"{BUILTIN_IMAGE_SIZE} x {BUILTIN_IMAGE_SIZE}; set model.image_size={BUILTIN_IMAGE_SIZE}"
            )
        _check_tower("reference.image_variant", self.reference.image_variant, self.model.image_size)
        if self.step.reference_embeddings == "cached" and not self.needs_reference:
            raise ValueError(
                f"step.reference_embeddings='cached' but method={self.step.method!r} uses no "
                "reference; set step.reference_embeddings=online"
            )

    @property
    def needs_reference(self) -> bool:
        """Whether the method scores with a reference (ACID, ACED) or distils from a teacher (KD, ACED)."""
        return self.step.uses_selection or self.step.uses_kd


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a config tree; inverse of `from_dict`."""
    return dataclasses.asdict(config)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config tree of type `cls` from `to_dict`'s output, validating every field."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} expects a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value)
        elif not _matches(value, hint):
            raise ValueError(f"{cls.__name__}.{name}={value!r} does not have type {hint}")
        kwargs[name] = value
    return cls(**kwargs)


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


# Kept as a name of this module: the CLI and presets apply overrides through it.
override = apply_overrides


def _step(method: str, **selection: Any) -> StepConfig:
    step = method_preset(method)
    overrides = [f"selection.{k}={v}" for k, v in selection.items()]
    if step.uses_selection or step.uses_kd:
        overrides.append("reference_embeddings=cached")
    return apply_overrides(step, overrides)


def _smoke() -> RunConfig:
    return RunConfig(
        step=apply_overrides(_step("aced", filter_ratio=0.5, n_chunks=4), ["optim.warmup_steps=5"]),
        data=DataConfig(size=2048, super_batch_size=64),
        train=LoopConfig(
            steps=20, log_every=5, checkpoint_every=10, eval_per_task=40, eval_retrieval_size=40,
            eval_batch_size=200, out_dir="runs/smoke",
        ),
        reference=ReferenceConfig(
            image_variant="mu/7", text_variant="mu", train_steps=20, curated_size=1024, super_batch_size=32,
            warmup_steps=5,
        ),
    )


def method_step(method: str) -> StepConfig:
    """The step of the method presets: f = 0.75 (b = 64 of B = 256 for every method),
    cached reference embeddings, peak learning rate 3e-3."""
    return apply_overrides(_step(method, filter_ratio=0.75), ["optim.learning_rate=3e-3"])


def _method(method: str) -> RunConfig:
    return RunConfig(step=method_step(method), train=LoopConfig(out_dir=f"runs/{method}"))


def _reference() -> RunConfig:
    ref = ReferenceConfig()
    return RunConfig(
        step=apply_overrides(method_preset("iid"), ["selection.filter_ratio=0", f"optim.learning_rate={ref.learning_rate}"]),
        model=ModelConfig(image_variant=ref.image_variant, text_variant=ref.text_variant),
        data=DataConfig(split="curated", size=ref.curated_size, super_batch_size=ref.super_batch_size),
        train=LoopConfig(steps=ref.train_steps, out_dir="runs/reference"),
    )


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
            f"data.source={run.data.source!r}: a reference can be trained here only on the built-in "
            "curated split; set reference.path to a reference model or run directory"
        )
    step = apply_overrides(
        base.step, [f"optim.learning_rate={ref.learning_rate}", f"optim.warmup_steps={ref.warmup_steps}"]
    )
    model = ModelConfig(
        image_variant=ref.image_variant,
        text_variant=ref.text_variant,
        embed_dim=run.model.embed_dim if ref.embed_dim is None else ref.embed_dim,
        image_size=run.model.image_size,
        channels=run.model.channels,
        max_len=run.model.max_len,
    )
    data = dataclasses.replace(
        run.data, split="curated", size=ref.curated_size, super_batch_size=ref.super_batch_size
    )
    train = dataclasses.replace(
        run.train,
        steps=ref.train_steps,
        eval_every=0,
        checkpoint_every=min(run.train.checkpoint_every, ref.train_steps),
        out_dir=str(pathlib.Path(run.train.out_dir) / "reference"),
    )
    return RunConfig(step=step, model=model, data=data, train=train, reference=ref)


PRESETS = {
    "smoke": (_smoke, "ACED end to end at toy scale, reference included (about a minute on CPU, mostly compiling)"),
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
