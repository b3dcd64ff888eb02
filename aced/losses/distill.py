"""Knowledge-distillation losses between a student and a teacher two-tower model.

Pure functions over pair logits (``t * zimg @ ztxt.T (+ b)``) or embeddings.
``softmax_kd`` is open_clip's ``DistillClipLoss`` (soft cross-entropy of the
teacher's softmax against the student's log-softmax, over rows and columns,
averaged); ``softmax_kl`` is the same minus the teacher's entropy, so it is
non-negative and zero exactly when the two agree. ``sigmoid_kd`` is SigLIP's
pair-wise form; ``feature_kd`` matches embeddings directly.
"""

from typing import Literal

import jax
import jax.numpy as jnp
from beartype import beartype as typechecker
from jaxtyping import Array, Float, jaxtyped


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
