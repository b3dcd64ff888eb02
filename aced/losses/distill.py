"""Knowledge-distillation losses between a student and a teacher two-tower model.

Pure functions over pair logits (``t * zimg @ ztxt.T (+ b)``) or embeddings.
``softmax_kd`` is open_clip's ``DistillClipLoss`` (soft cross-entropy of the
teacher's softmax against the student's log-softmax, over rows and columns,
averaged); ``softmax_kl`` is the same minus the teacher's entropy, so it is
non-negative and zero exactly when the two agree. ``sigmoid_kd`` is SigLIP's
pair-wise form; ``feature_kd`` matches embeddings directly.

`KD_LOSSES` registers each as a function of the student's and the teacher's
`aced.types.Embedded` views, with whether it needs a projection and its
FLOPs; a new KD loss is one function plus `register_kd_loss`.
"""

import dataclasses
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
from beartype import beartype as typechecker
from jaxtyping import Array, Float, jaxtyped

from aced.registry import lookup, register
from aced.types import Embedded


def _soft_cross_entropy(
    student_logits: Float[Array, "n m"], teacher_logits: Float[Array, "n m"]
) -> Float[Array, ""]:
    """Mean over rows of ``-sum_j softmax(teacher)_j log_softmax(student)_j``."""
    targets = jax.nn.softmax(teacher_logits, axis=1)
    return -(targets * jax.nn.log_softmax(student_logits, axis=1)).sum(axis=1).mean()


@jaxtyped(typechecker=typechecker)
def softmax_kd(
    student_logits: Float[Array, "n n"],
    teacher_logits: Float[Array, "n n"],
    temperature: float = 1.0,
) -> Float[Array, ""]:
    """Soft cross-entropy distillation over image->text rows and text->image columns.

    **Arguments:**

    - `student_logits`, `teacher_logits`: (n, n) pair logits, rows images, columns texts.
    - `temperature`: both logits are divided by it (tau of the KD literature).

    **Returns:** ``(CE_rows + CE_cols) / 2``; equal to open_clip's
    ``DistillClipLoss`` distillation term when ``temperature == 1``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    s, t = student_logits / temperature, teacher_logits / temperature
    return 0.5 * (_soft_cross_entropy(s, t) + _soft_cross_entropy(s.T, t.T))


@jaxtyped(typechecker=typechecker)
def softmax_kl(
    student_logits: Float[Array, "n n"],
    teacher_logits: Float[Array, "n n"],
    temperature: float = 1.0,
) -> Float[Array, ""]:
    """`softmax_kd` minus the teacher's entropy: KL(teacher || student), rows and columns averaged.

    Same gradients as `softmax_kd` w.r.t. the student; non-negative, and zero
    exactly when the student's row and column softmaxes equal the teacher's.
    """
    return softmax_kd(student_logits, teacher_logits, temperature) - softmax_kd(
        teacher_logits, teacher_logits, temperature
    )


@jaxtyped(typechecker=typechecker)
def sigmoid_kd(
    student_logits: Float[Array, "n n"],
    teacher_logits: Float[Array, "n n"],
    temperature: float = 1.0,
) -> Float[Array, ""]:
    """Per-pair binary cross-entropy of the student against ``sigmoid(teacher)``.

    Summed over all pairs and divided by n, the normalisation of `sigmoid_loss`,
    so that ``kd_weight`` trades the two terms at the same scale. Logits include
    each model's bias; both are divided by `temperature`.
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    s, t = student_logits / temperature, teacher_logits / temperature
    p = jax.nn.sigmoid(t)
    # BCE(p, sigmoid(s)) = -p log sig(s) - (1 - p) log sig(-s)
    pair = -(p * jax.nn.log_sigmoid(s) + (1.0 - p) * jax.nn.log_sigmoid(-s))
    return pair.sum() / student_logits.shape[0]


@jaxtyped(typechecker=typechecker)
def feature_kd(
    student: Float[Array, "n D"],
    teacher: Float[Array, "n D"],
    kind: Literal["cosine", "l2"] = "cosine",
) -> Float[Array, ""]:
    """Feature matching between L2-normalised embeddings of the same examples.

    `cosine`: mean of ``1 - cos(student_i, teacher_i)``; `l2`: mean squared
    distance. When the two widths differ, project the student first (the train
    step owns that learned projection) and pass the projected features here;
    both are re-normalised so a projection cannot shrink the loss by scaling.
    """
    s = student / jnp.linalg.norm(student, axis=1, keepdims=True)
    t = teacher / jnp.linalg.norm(teacher, axis=1, keepdims=True)
    if kind == "cosine":
        return (1.0 - (s * t).sum(axis=1)).mean()
    if kind == "l2":
        return ((s - t) ** 2).sum(axis=1).mean()
    raise ValueError(f"kind={kind!r} must be 'cosine' or 'l2'")


# ---- KD_LOSSES: each KD loss as a function of the student's and teacher's views


@dataclasses.dataclass(frozen=True)
class KDLoss:
    """A distillation loss between a student's and a teacher's views of one batch.

    **Fields:**

    - `fn`: ``(student: Embedded, teacher: Embedded, temperature: float) ->
      scalar``. With `needs_projection`, the student's embeddings arrive
      already projected to the teacher's width when the widths differ.
    - `needs_projection`: compares embeddings directly, so a student of
      another width needs a learned projection (the train state owns it).
    - `flops`: ``(n, student_width, teacher_width) -> int``: the loss's
      matrix-product FLOPs in one training step on a batch of n: forward and
      backward (3x forward) of the student's products, forward of the
      teacher's. Elementwise work is not counted (as in `aced.flops`); a
      projection is counted by the step.
    - `about`: one line for ``aced train --help``.
    - `tempered`: divides logits by the temperature, so ``step.distill.tau_squared``
      (Hinton's tau ** 2 factor) applies; False for a loss that ignores it.
    """

    fn: Callable[[Embedded, Embedded, float], Array]
    needs_projection: bool = False
    flops: Callable[[int, int, int], int] = lambda n, d_student, d_teacher: 0
    about: str = ""
    tempered: bool = True


def logit_kd_flops(n: int, d_student: int, d_teacher: int) -> int:
    """A logit-matching KD loss: the student's (n, n) similarities forward and
    backward, the teacher's forward: ``3 * 2 n^2 D_s + 2 n^2 D_t``."""
    return 3 * 2 * n * n * d_student + 2 * n * n * d_teacher


def _softmax_logits(view: Embedded) -> Array:
    # softmax is bias-invariant: temperature-scaled similarities only
    return view.t * (view.zimg @ view.ztxt.T)


def _sigmoid_logits(view: Embedded) -> Array:
    return view.t * (view.zimg @ view.ztxt.T) + view.b


def kd_softmax(student: Embedded, teacher: Embedded, temperature: float) -> Array:
    """`softmax_kd` on the two views' ``t * zimg @ ztxt.T`` (open_clip's distillation)."""
    return softmax_kd(_softmax_logits(student), _softmax_logits(teacher), temperature)


def kd_softmax_kl(student: Embedded, teacher: Embedded, temperature: float) -> Array:
    """`softmax_kl` on the two views' ``t * zimg @ ztxt.T``."""
    return softmax_kl(_softmax_logits(student), _softmax_logits(teacher), temperature)


def kd_sigmoid(student: Embedded, teacher: Embedded, temperature: float) -> Array:
    """`sigmoid_kd` on the two views' ``t * zimg @ ztxt.T + b``."""
    return sigmoid_kd(_sigmoid_logits(student), _sigmoid_logits(teacher), temperature)


def _feature(kind: Literal["cosine", "l2"]) -> Callable[[Embedded, Embedded, float], Array]:
    def fn(student: Embedded, teacher: Embedded, temperature: float) -> Array:
        del temperature  # embeddings, not logits
        return 0.5 * (
            feature_kd(student.zimg, teacher.zimg, kind)
            + feature_kd(student.ztxt, teacher.ztxt, kind)
        )

    fn.__name__ = f"kd_feature_{kind}"
    return fn


KD_LOSSES: dict[str, KDLoss] = {
    "softmax": KDLoss(
        kd_softmax, False, logit_kd_flops, "open_clip soft cross-entropy, rows and columns"
    ),
    "softmax_kl": KDLoss(
        kd_softmax_kl, False, logit_kd_flops, "KL(teacher || student), rows and columns"
    ),
    "sigmoid": KDLoss(kd_sigmoid, False, logit_kd_flops, "pair-wise BCE against sigmoid(teacher)"),
    "feature": KDLoss(
        _feature("cosine"),
        True,
        about="1 - cosine between student and teacher embeddings",
        tempered=False,
    ),
    "feature_l2": KDLoss(
        _feature("l2"), True, about="squared distance of normalised embeddings", tempered=False
    ),
}


def register_kd_loss(name: str, loss: KDLoss, *, overwrite: bool = False) -> KDLoss:
    """Register `loss` as `name` for ``step.distill.loss`` (``aced train step.distill.loss=NAME``)."""
    return register(KD_LOSSES, "KD loss", name, loss, overwrite=overwrite)


def kd_loss(loss: "str | KDLoss") -> KDLoss:
    """The registered `KDLoss` named `loss` (an entry passes through)."""
    return lookup(KD_LOSSES, "KD loss", loss)
