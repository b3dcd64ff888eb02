"""The step's configuration: method, selection, distillation, optimiser.

`METHODS` names the paper's four methods by what they do (curate the
sub-batch, distil from the teacher); the fields that name a pair score, a
selection rule, a KD loss or a contrastive loss accept any name registered in
`aced.selection` / `aced.losses`.
"""

import dataclasses
from dataclasses import dataclass
from typing import Literal

from aced.kernels import BlockSizes, GpuLowering, Precision, default_blocks, resolve_interpret
from aced.losses import CONTRASTIVE_LOSSES, KD_LOSSES
from aced.registry import lookup
from aced.selection import PAIR_SCORES, SELECTION_RULES
from aced.selection.checks import check_counts
from aced.train.config.fields import check_fields, check_positive, help_field


@dataclasses.dataclass(frozen=True)
class Method:
    """One of the paper's methods: whether it curates the sub-batch and whether it distils."""

    curates: bool
    distils: bool
    about: str = ""


METHODS: dict[str, Method] = {
    "iid": Method(False, False, "random sub-batch"),
    "kd": Method(False, True, "random sub-batch + KD"),
    "acid": Method(True, False, "curated sub-batch"),
    "aced": Method(True, True, "curated sub-batch + KD"),
}


@dataclass(frozen=True, kw_only=True)
class SelectionConfig:
    """How the sub-batch is chosen from the super-batch (ACID / ACED only)."""

    score: str = help_field(
        "pair score (aced.selection.PAIR_SCORES)",
        registry=(PAIR_SCORES, "pair score"),
        default="learnability",
    )
    rule: str = help_field(
        "how each chunk is drawn (aced.selection.SELECTION_RULES): jest samples, greedy takes "
        "the top, independent* draw from the diagonal alone",
        registry=(SELECTION_RULES, "selection rule"),
        default="jest",
    )
    filter_ratio: float = help_field(
        "f: fraction of the super-batch discarded; sub-batch b = (1 - f) * B", default=0.8
    )
    n_chunks: int = help_field("chunks the joint selection builds the sub-batch in", default=16)
    scope: Literal["global", "local"] = help_field(
        "global: select over the whole super-batch (embeddings all-gathered); "
        "local: each device selects from its own shard",
        default="global",
    )
    implementation: Literal["auto", "dense", "blocked"] = help_field(
        "dense B x B score matrix, the blocked Pallas kernel (O(B d) memory), "
        "or auto (blocked above `blocked_threshold`)",
        default="auto",
    )
    blocked_threshold: int = help_field("auto switches to blocked above this B", default=8192)
    interpret: bool | None = help_field(
        "the Pallas kernel in the interpreter (true; the only mode on CPU), compiled "
        "(false: GPU / TPU), or none: the interpreter on CPU, compiled elsewhere",
        default=None,
    )
    block_rows: int | None = help_field(
        "rows of the pair-score tiles (a power of two >= 16 and a multiple of block_cols): "
        "the kernel's grid step; the dense path computes on the same tiles; none: 512 in "
        "the Pallas interpreter, 64 compiled (aced.kernels.default_blocks)",
        default=None,
    )
    block_cols: int | None = help_field(
        "columns of the pair-score tiles (a power of two >= 16): the kernel's inner step; "
        "none: 64 in the interpreter, 32 compiled",
        default=None,
    )
    block_d: int | None = help_field(
        "embedding columns per pair-score product (0 or a power of two >= 16): each tile's "
        "logits sum the products of block_d-wide slices of the width; 0: the whole width in "
        "one product; none: 0 in the interpreter, 64 compiled",
        default=None,
    )
    precision: Precision = help_field(
        "precision of the pair-score products: highest (f32), tf32 (XLA's default: TF32 on "
        "NVIDIA GPUs, f32 on CPU) or bf16 (bfloat16 inputs, f32 accumulation)",
        default="highest",
    )
    gpu_lowering: GpuLowering = help_field(
        "the pair-score kernel compiled for an NVIDIA GPU: mosaic_gpu (wgmma tensor cores, "
        "Hopper only; highest precision as 3xTF32), triton (any GPU; deprecated in JAX "
        "0.11) or auto (Mosaic GPU on Hopper, Triton elsewhere); in the interpreter, "
        "mosaic_gpu runs the Mosaic GPU kernel in Pallas' GPU interpreter",
        default="auto",
    )
    score_image_size: int = help_field(
        "Flexi scoring (FlexiJEST): the learner scores the super-batch with its images "
        "resized to this side (a multiple of the patch size, below model.image_size; its "
        "position embeddings resampled), cutting the scoring forward; 0: the training size",
        default=0,
    )

    def __post_init__(self) -> None:
        check_fields(self, "step.selection.")
        if not 0.0 <= self.filter_ratio < 1.0:
            raise ValueError(f"filter_ratio={self.filter_ratio} must be in [0, 1)")
        if self.score_image_size < 0:
            raise ValueError(f"score_image_size={self.score_image_size} must be >= 0 (0: off)")
        if self.n_chunks < 1:
            raise ValueError(f"n_chunks={self.n_chunks} must be >= 1")
        try:  # valid for the interpreter and for the compiled kernel alike
            self.block_sizes(interpret=True), self.block_sizes(interpret=False)
        except ValueError as e:
            raise ValueError(f"step.selection: {e}") from None

    def block_sizes(self, interpret: bool | None = None) -> BlockSizes:
        """The pair-score tiles (and their products' precision) both selection paths use.

        Fields left at ``None`` take `aced.kernels.default_blocks` for the
        kernel's mode: `interpret`, or for ``None`` this config's `interpret`
        resolved (`aced.kernels.resolve_interpret`: the interpreter on CPU).
        """
        mode = resolve_interpret(self.interpret) if interpret is None else interpret
        base = default_blocks(mode)
        return BlockSizes(
            base.block_rows if self.block_rows is None else self.block_rows,
            base.block_cols if self.block_cols is None else self.block_cols,
            self.precision,
            base.block_d if self.block_d is None else self.block_d,
            self.gpu_lowering,
        )

    def implementation_for(self, n: int) -> str:
        """``dense`` or ``blocked``: how a joint selection over n examples runs."""
        if self.implementation == "auto":
            return "blocked" if n > self.blocked_threshold else "dense"
        return self.implementation


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """The explicit distillation term ``weight * KD(teacher, student)`` (KD / ACED)."""

    loss: str = help_field(
        "KD loss (aced.losses.KD_LOSSES): softmax (open_clip soft CE), softmax_kl, sigmoid "
        "(pair-wise BCE), feature (cosine) or feature_l2 matching",
        registry=(KD_LOSSES, "KD loss"),
        default="softmax",
    )
    weight: float = help_field("lambda: weight of the KD term (0 for IID / ACID)", default=0.0)
    temperature: float = help_field("tau dividing student and teacher logits", default=1.0)
    tau_squared: bool = help_field(
        "multiply the KD term by tau ** 2 (Hinton et al. 2015), so that its gradient keeps "
        "its scale as tau changes; off by default, as in open_clip (at tau = 1 it is the same)",
        default=False,
    )
    batch: Literal["selected", "iid"] = help_field(
        "selected: KD on the curated sub-batch (ACIDistill); iid: on a separate "
        "uniformly drawn sub-batch (IIDistill)",
        default="selected",
    )

    def __post_init__(self) -> None:
        check_fields(self, "step.distill.")
        check_positive("step.distill.weight", self.weight, zero_ok=True)
        check_positive("step.distill.temperature", self.temperature)
        if self.tau_squared and not lookup(KD_LOSSES, "KD loss", self.loss).tempered:
            raise ValueError(
                f"step.distill.tau_squared=true: the KD loss {self.loss!r} has no temperature "
                "(KDLoss.tempered is False); set step.distill.tau_squared=false"
            )


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """optax AdamW with linear warm-up and cosine decay, and global-norm clipping."""

    learning_rate: float = help_field("peak learning rate", default=1e-3)
    warmup_steps: int = help_field("linear warm-up steps", default=50)
    decay_steps: int = help_field("cosine decay length (0: constant after warm-up)", default=0)
    weight_decay: float = help_field(
        "weight decay of matrices and embeddings (optax adamw: times the learning rate, so "
        "each step takes lr * weight_decay * p off; never biases, LayerNorm, t or b)",
        default=1e-4,
    )
    b1: float = help_field("Adam beta1", default=0.9)
    b2: float = help_field("Adam beta2", default=0.95)
    eps: float = help_field("Adam epsilon", default=1e-8)
    grad_clip_norm: float = help_field("clip gradients to this global norm (0: off)", default=1.0)

    def __post_init__(self) -> None:
        check_positive("step.optim.learning_rate", self.learning_rate)
        check_positive("step.optim.warmup_steps", self.warmup_steps, zero_ok=True)
        check_positive("step.optim.decay_steps", self.decay_steps, zero_ok=True)
        check_positive("step.optim.weight_decay", self.weight_decay, zero_ok=True)
        check_positive("step.optim.grad_clip_norm", self.grad_clip_norm, zero_ok=True)


@dataclass(frozen=True, kw_only=True)
class StepConfig:
    """Everything one `train_step` needs to know: the method and its losses."""

    method: str = help_field(
        "iid: random sub-batch; kd: random sub-batch + KD; acid: curated sub-batch; "
        "aced: curated sub-batch + KD",
        registry=(METHODS, "method"),
        default="acid",
    )
    selection: SelectionConfig = help_field("sub-batch selection", default_factory=SelectionConfig)
    distill: DistillConfig = help_field("distillation term", default_factory=DistillConfig)
    contrastive: str = help_field(
        "learner's contrastive loss (aced.losses.CONTRASTIVE_LOSSES): SigLIP sigmoid or CLIP "
        "softmax",
        registry=(CONTRASTIVE_LOSSES, "contrastive loss"),
        default="sigmoid",
    )
    sharded_loss: Literal["ring", "all_gather"] = help_field(
        "how the sigmoid loss crosses devices: ppermute ring or all-gather "
        "(the softmax loss always all-gathers)",
        default="ring",
    )
    reference_embeddings: Literal["online", "cached"] = help_field(
        "online: embed the super-batch with the reference every step; cached: "
        "precomputed once per example (the reference is frozen)",
        default="online",
    )
    optim: OptimConfig = help_field("optimiser", default_factory=OptimConfig)

    def __post_init__(self) -> None:
        check_fields(self, "step.")
        if self.uses_kd and self.distill.weight == 0:
            raise ValueError(
                f"method={self.method!r} distils: set distill.weight > 0 "
                "(or use method='iid' / 'acid' for no KD term)"
            )
        if not self.uses_kd and self.distill.weight != 0:
            raise ValueError(
                f"method={self.method!r} has no KD term but distill.weight="
                f"{self.distill.weight}: use method='kd' / 'aced', or set distill.weight=0"
            )

    @property
    def uses_selection(self) -> bool:
        return lookup(METHODS, "method", self.method).curates

    @property
    def uses_kd(self) -> bool:
        return lookup(METHODS, "method", self.method).distils

    def sub_batch_size(self, super_batch: int) -> int:
        """b = round((1 - f) * B); every method trains on b examples per step."""
        return int(round((1.0 - self.selection.filter_ratio) * super_batch))

    def check_shapes(self, super_batch: int, n_devices: int) -> int:
        """Validate the batch geometry eagerly; return the sub-batch size b."""
        b = self.sub_batch_size(super_batch)
        if super_batch % n_devices:
            raise ValueError(
                f"super-batch B={super_batch} must be divisible by the {n_devices} devices of "
                "the mesh"
            )
        if b < 1:
            raise ValueError(f"sub-batch b=(1-f)*B={b} is empty: lower selection.filter_ratio")
        if b % n_devices:
            raise ValueError(
                f"sub-batch b=(1-f)*B={b} must be divisible by the {n_devices} devices; "
                "change the super-batch size or selection.filter_ratio"
            )
        joint = lookup(SELECTION_RULES, "selection rule", self.selection.rule).joint
        if self.uses_selection and joint:
            local = self.selection.scope == "local"
            per = b // n_devices if local else b
            if per % self.selection.n_chunks:
                raise ValueError(
                    f"n_select={per} (sub-batch{' per device' if local else ''})"
                    f" must be divisible by selection.n_chunks={self.selection.n_chunks}"
                )
            check_counts(per, per, self.selection.n_chunks)  # the chunk size's bound
        return b
