"""Dense contrastive losses: SigLIP sigmoid and CLIP softmax.

Pure functions over L2-normalised embeddings. Each returns the loss and, where
useful, a metrics dict in the manner of big_vision's ``siglip.py``.
"""

from typing import Literal

import jax
import jax.numpy as jnp
from beartype import beartype as typechecker
from jaxtyping import Array, Float, Int, ScalarLike, jaxtyped


def pair_logits(
    zimg: Float[Array, "n D"], ztxt: Float[Array, "m D"], t: ScalarLike, b: ScalarLike = 0.0
) -> Float[Array, "n m"]:
    """``t * zimg @ ztxt.T + b``: (n, D) . (D, m) -> (n, m)."""
    return t * (zimg @ ztxt.T) + b


def pair_labels(
    n: int, m: int | None = None, offset: int | Int[Array, ""] = 0
) -> Float[Array, "n m"]:
    """SigLIP labels ``z_ij``: +1 where ``i + offset == j``, -1 elsewhere.

    `offset` may be traced (e.g. ``axis_index * n`` for a device's rows).
    """
    m = n if m is None else m
    rows = jnp.arange(n)[:, None] + offset
    return jnp.where(rows == jnp.arange(m)[None, :], 1.0, -1.0)


@jaxtyped(typechecker=typechecker)
def sigmoid_pair_losses(
    zimg: Float[Array, "n D"], ztxt: Float[Array, "n D"], t: ScalarLike, b: ScalarLike
) -> Float[Array, "n n"]:
    """Per-pair SigLIP losses ``l_ij = -log sigmoid(z_ij * (t <x_i, y_j> + b))``.

    **Arguments:**

    - `zimg`, `ztxt`: L2-normalised image and text embeddings, row i of each
      forming the positive pair i.
    - `t`: the temperature itself (not its log); `b`: the bias.

    **Returns:** an (n, n) matrix; entry (i, j) pairs image i with text j.
    """
    logits = pair_logits(zimg, ztxt, t, b)
    return -jax.nn.log_sigmoid(pair_labels(zimg.shape[0]).astype(logits.dtype) * logits)


@jaxtyped(typechecker=typechecker)
def sigmoid_loss(
    zimg: Float[Array, "n D"],
    ztxt: Float[Array, "n D"],
    t: ScalarLike,
    b: ScalarLike,
    reduction: Literal["mean", "none"] = "mean",
) -> Float[Array, ""] | Float[Array, " n"]:
    """SigLIP loss with big_vision's normalisation: sum over all pairs / n.

    With ``reduction="none"`` returns the per-example losses (row sums of the
    pair losses: image i against every text), whose mean is the batch loss.
    """
    rows = sigmoid_pair_losses(zimg, ztxt, t, b).sum(axis=1)
    return rows if reduction == "none" else rows.mean()


@jaxtyped(typechecker=typechecker)
def sigmoid_loss_with_metrics(
    zimg: Float[Array, "n D"], ztxt: Float[Array, "n D"], t: ScalarLike, b: ScalarLike
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """`sigmoid_loss` plus big_vision's logit diagnostics."""
    logits = pair_logits(zimg, ztxt, t, b)
    n = zimg.shape[0]
    labels = pair_labels(n).astype(logits.dtype)
    loss = -jax.nn.log_sigmoid(labels * logits).sum() / n
    positive = labels > 0
    big = jnp.finfo(logits.dtype).max
    metrics = {
        "pos_min_logit": jnp.min(jnp.where(positive, logits, big)),
        "pos_avg_logit": jnp.sum(jnp.where(positive, logits, 0.0)) / n,
        "neg_max_logit": jnp.max(jnp.where(positive, -big, logits)),
        "neg_avg_logit": jnp.sum(jnp.where(positive, 0.0, logits)) / max(n * (n - 1), 1),
    }
    return loss, metrics


@jaxtyped(typechecker=typechecker)
def softmax_loss(
    zimg: Float[Array, "n D"], ztxt: Float[Array, "n D"], t: ScalarLike
) -> Float[Array, ""]:
    """CLIP InfoNCE: mean of image->text and text->image cross-entropies."""
    logits = pair_logits(zimg, ztxt, t)
    diag = jnp.diagonal(logits)
    i2t = jax.nn.logsumexp(logits, axis=1) - diag
    t2i = jax.nn.logsumexp(logits, axis=0) - diag
    return 0.5 * (i2t.mean() + t2i.mean())
