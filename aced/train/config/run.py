"""The run's configuration: the step plus the learner, data, loop and reference.

``RunConfig`` is the root of the one configuration tree (`aced.train.config`);
``aced train --help`` lists every leaf with its help.
"""

from dataclasses import dataclass
from typing import Literal

from aced.models import TwoTowerConfig, decode_variant
from aced.train.config.fields import check_fields, check_positive, help_field
from aced.train.config.step import StepConfig

# The built-in scenes are 2 x 2 cells of 28 pixels (aced.data.SceneConfig()).
BUILTIN_IMAGE_SIZE = 56
FILE_SOURCES = ("parquet", "imagefolder", "webdataset", "csv")


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

    image_variant: str = help_field(
        "image tower, size/patch (aced.models.variants): mu/7, nano/7, S/16", default="mu/7"
    )
    text_variant: str = help_field("text tower size: mu, nano, S", default="mu")
    embed_dim: int = help_field("D: width of the shared image-text embedding space", default=64)
    image_size: int = help_field(
        "input image side in pixels (56 for the built-in scenes)", default=BUILTIN_IMAGE_SIZE
    )
    channels: int = help_field(
        "input channels (1: grey, as the built-in scenes; 3: RGB)", default=1
    )
    max_len: int | None = help_field(
        "L: tokens per caption (none: the tokenizer's own length)", default=None
    )

    def __post_init__(self) -> None:
        check_positive("model.embed_dim", self.embed_dim)
        check_positive("model.image_size", self.image_size)
        if self.channels not in (1, 3):
            raise ValueError(f"model.channels={self.channels} must be 1 or 3")
        if self.max_len is not None and self.max_len < 2:
            raise ValueError(
                f"model.max_len={self.max_len} must be >= 2 (one word and <eos>), or none"
            )
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

    source: Literal["builtin", "parquet", "imagefolder", "webdataset", "csv"] = help_field(
        "builtin: Fashion-MNIST scenes made in memory; or files read with HF datasets",
        default="builtin",
    )
    split: Literal["web", "curated"] = help_field(
        "built-in split: web (noisy, the learner's data) or curated (clean, references)",
        default="web",
    )
    size: int = help_field("built-in scenes to make for the split", default=10000)
    path: str | None = help_field(
        "files (parquet/csv/webdataset, globs allowed) or folder (imagefolder)", default=None
    )
    image_column: str | None = help_field(
        "image column of parquet / csv data (none: the format's default)", default=None
    )
    caption_column: str | None = help_field(
        "caption column of parquet / csv / imagefolder data (none: the format's default)",
        default=None,
    )
    tokenizer: str | None = help_field(
        "tokenizer.json to use (none: the built-in word tokenizer of the scene captions)",
        default=None,
    )
    super_batch_size: int = help_field("B: examples drawn per step, before selection", default=256)
    seed: int = help_field("seed of the scenes and of the shuffling", default=0)

    def __post_init__(self) -> None:
        check_fields(self, "data.")
        check_positive("data.size", self.size)
        check_positive("data.super_batch_size", self.super_batch_size)
        if self.source in FILE_SOURCES and not self.path:
            raise ValueError(
                f"data.source={self.source!r} reads files: set data.path=<files or folder>"
            )
        if self.source == "builtin" and self.super_batch_size > self.size:
            raise ValueError(
                f"data.super_batch_size={self.super_batch_size} exceeds the dataset's "
                f"data.size={self.size} examples; lower the super-batch or raise data.size"
            )


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Length of the run, logging, evaluation and checkpoints."""

    steps: int = help_field("training steps", default=300)
    log_every: int = help_field("write metrics every this many steps", default=10)
    eval_every: int = help_field("evaluate every this many steps (0: only at the end)", default=0)
    eval_per_task: int = help_field(
        "images per zero-shot task of the evaluation suite", default=200
    )
    eval_retrieval_size: int = help_field(
        "image-caption pairs of the retrieval evaluation", default=500
    )
    eval_batch_size: int = help_field("rows per embedding call during evaluation", default=500)
    eval_tasks: str | None = help_field(
        "a task file of your own datasets (TOML / JSON, aced.eval.user_tasks) to evaluate on "
        "instead of the built-in suite",
        default=None,
    )
    checkpoint_every: int = help_field(
        "save a checkpoint every this many steps (and at the end)", default=100
    )
    keep_checkpoints: int = help_field("checkpoints kept on disk (the latest ones)", default=2)
    out_dir: str = help_field(
        "run directory: checkpoints, metrics.jsonl, TensorBoard events, model", default="runs/aced"
    )
    seed: int = help_field(
        "seed of the learner's initialisation and of the step's randomness", default=0
    )
    progress: bool = help_field("show a tqdm progress bar", default=True)

    def __post_init__(self) -> None:
        check_positive("train.steps", self.steps)
        check_positive("train.log_every", self.log_every)
        check_positive("train.eval_every", self.eval_every, zero_ok=True)
        check_positive("train.eval_per_task", self.eval_per_task)
        check_positive("train.eval_batch_size", self.eval_batch_size)
        check_positive("train.checkpoint_every", self.checkpoint_every)
        check_positive("train.keep_checkpoints", self.keep_checkpoints)
        if self.eval_retrieval_size < 5:
            raise ValueError(
                f"train.eval_retrieval_size={self.eval_retrieval_size} must be >= 5 (recall@5)"
            )
        if not self.out_dir:
            raise ValueError("train.out_dir is empty: name the run directory")


@dataclass(frozen=True, kw_only=True)
class ReferenceConfig:
    """The frozen reference (the teacher in KD / ACED): loaded, or trained on curated data first."""

    path: str | None = help_field(
        "a model directory (config.json + model.safetensors) or a run directory with checkpoints; "
        "none: train one on the curated split first, under <out_dir>/reference",
        default=None,
    )
    image_variant: str = help_field("image tower of a reference trained here", default="mu/7")
    text_variant: str = help_field("text tower of a reference trained here", default="mu")
    embed_dim: int | None = help_field(
        "D of a reference trained here (none: the learner's)", default=None
    )
    train_steps: int = help_field("steps of a reference trained here", default=300)
    curated_size: int = help_field(
        "curated scenes a reference trained here learns from", default=10000
    )
    super_batch_size: int = help_field(
        "batch of a reference trained here (it trains on all of it)", default=128
    )
    learning_rate: float = help_field(
        "peak learning rate of a reference trained here", default=3e-3
    )
    warmup_steps: int = help_field("learning-rate warm-up of a reference trained here", default=50)
    embeddings: str | None = help_field(
        "a directory of `aced embed`: the reference's embeddings of the training data, read "
        "instead of computed (needs step.reference_embeddings=cached); none: embed here",
        default=None,
    )

    def __post_init__(self) -> None:
        if "patch_size" not in decode_variant(self.image_variant):
            raise ValueError(
                f"reference.image_variant={self.image_variant!r} names no patch size: write e.g. "
                f"'{self.image_variant}/7'"
            )
        _check_tower("reference.text_variant", self.text_variant, None)
        if self.embed_dim is not None:
            check_positive("reference.embed_dim", self.embed_dim)
        check_positive("reference.train_steps", self.train_steps)
        check_positive("reference.curated_size", self.curated_size)
        check_positive("reference.super_batch_size", self.super_batch_size)
        check_positive("reference.learning_rate", self.learning_rate)
        check_positive("reference.warmup_steps", self.warmup_steps, zero_ok=True)
        if self.super_batch_size > self.curated_size:
            raise ValueError(
                f"reference.super_batch_size={self.super_batch_size} exceeds "
                f"reference.curated_size={self.curated_size}; lower it or raise the curated size"
            )


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything `aced.train.loop.train` needs; ``aced train --help`` lists every field."""

    step: StepConfig = help_field("method, losses and optimiser", default_factory=StepConfig)
    model: ModelConfig = help_field("the learner", default_factory=ModelConfig)
    data: DataConfig = help_field("training data", default_factory=DataConfig)
    train: TrainConfig = help_field(
        "loop, logging, evaluation, checkpoints", default_factory=TrainConfig
    )
    reference: ReferenceConfig = help_field("reference / teacher", default_factory=ReferenceConfig)

    def __post_init__(self) -> None:
        # The device-independent part of the batch geometry, eagerly (the
        # device count is checked again when the mesh is known).
        self.step.check_shapes(self.data.super_batch_size, 1)
        if self.data.source == "builtin" and self.model.image_size != BUILTIN_IMAGE_SIZE:
            raise ValueError(
                f"model.image_size={self.model.image_size} but the built-in scenes are "
                f"{BUILTIN_IMAGE_SIZE} x {BUILTIN_IMAGE_SIZE}; set model.image_size={BUILTIN_IMAGE_SIZE}"
            )
        _check_tower("reference.image_variant", self.reference.image_variant, self.model.image_size)
        self._check_flexi()
        if self.step.reference_embeddings == "cached" and not self.needs_reference:
            raise ValueError(
                f"step.reference_embeddings='cached' but method={self.step.method!r} uses no "
                "reference; set step.reference_embeddings=online"
            )
        if self.reference.embeddings and self.step.reference_embeddings != "cached":
            raise ValueError(
                f"reference.embeddings={self.reference.embeddings} is read only with "
                "step.reference_embeddings=cached; set it, or unset reference.embeddings"
            )

    def _check_flexi(self) -> None:
        size, full = self.step.selection.score_image_size, self.model.image_size
        if not size:
            return
        patch = decode_variant(self.model.image_variant)["patch_size"]
        if not self.step.uses_selection:
            raise ValueError(
                f"step.selection.score_image_size={size} but method={self.step.method!r} "
                "scores nothing; set it to 0 or use acid / aced"
            )
        if size >= full or size % patch:
            raise ValueError(
                f"step.selection.score_image_size={size} must be a multiple of the learner's "
                f"patch size {patch} below model.image_size={full} (e.g. {full // 2 // patch * patch})"
            )

    @property
    def needs_reference(self) -> bool:
        """Whether the method scores with a reference (ACID, ACED) or distils from a teacher (KD, ACED)."""
        return self.step.uses_selection or self.step.uses_kd
