"""SigLIP sigmoid loss for a batch split over a mesh axis.

Each device holds n local rows of the image and text embeddings; the global
batch is the concatenation of the local rows in axis-index order, so the
positives of device i are its own diagonal block. Two ways to see every pair
exactly once (SigLIP paper, Fig. 1; big_vision ``chunked_sigmoid``):

- `sigmoid_loss_all_gather`: gather every text, score local images against all
  of them. Simple; holds an (n, k n) logit block per device.
- `sigmoid_loss_ring`: images stay, text chunks travel around a ring of
  ``ppermute``s; one (n, n) block at a time, recomputed in the backward pass.

Both are called inside ``jax.shard_map`` and return the global loss (sum over
all pairs / global batch), identical on every device. `sharded_sigmoid_loss`
runs the ``shard_map`` itself over global arrays.

Gradients: with ``check_vma=True`` (the default) the replicated ``t`` and ``b``
become device-varying where they meet local data, and the transpose of that
cast sums their gradients over devices. So no explicit ``psum`` of parameter
gradients here; one would multiply them by the axis size.
"""

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
from beartype import beartype as typechecker
from jax.sharding import Mesh, PartitionSpec
from jaxtyping import Array, Float, ScalarLike, jaxtyped

from aced.losses.contrastive import pair_labels, pair_logits, softmax_loss
from aced.registry import lookup, register


@jaxtyped(typechecker=typechecker)
def sigmoid_loss_all_gather(
    zimg_local: Float[Array, "n D"],
    ztxt_local: Float[Array, "n D"],
    t: ScalarLike,
    b: ScalarLike,
    axis_name: str,
) -> Float[Array, ""]:
    """Global SigLIP loss by all-gathering the texts. Call inside ``shard_map``.

    **Arguments:**

    - `zimg_local`, `ztxt_local`: this device's n rows of the L2-normalised
      image and text embeddings; row i is the positive pair
      ``axis_index * n + i`` of the global batch.
    - `t`: the temperature itself (not its log); `b`: the bias. Replicated.
    - `axis_name`: the mesh axis the batch is split over.

    **Returns:** the global loss, sum over all (k n)^2 pairs / (k n), the same
    scalar on every device.
    """
    n = zimg_local.shape[0]
    k = jax.lax.axis_size(axis_name)
    # (n, D) per device -> (k n, D), device order = global row order.
    ztxt_all = jax.lax.all_gather(ztxt_local, axis_name, tiled=True)
    logits = pair_logits(zimg_local, ztxt_all, t, b)  # (n, D) . (D, k n) -> (n, k n)
    offset = jax.lax.axis_index(axis_name) * n
    labels = pair_labels(n, k * n, offset).astype(logits.dtype)
    local_sum = -jax.nn.log_sigmoid(labels * logits).sum()
    return jax.lax.psum(local_sum, axis_name) / (k * n)


@partial(jax.checkpoint, static_argnums=(4,))
def _block_loss_sum(
    zimg: Float[Array, "n D"],
    ztxt: Float[Array, "n D"],
    t: ScalarLike,
    b: ScalarLike,
    positives: bool,
) -> Float[Array, ""]:
    # Rematerialised: the backward pass keeps only the (n, D) inputs of each
    # block, not its (n, n) logits, so a device never holds more than one block.
    logits = pair_logits(zimg, ztxt, t, b)  # (n, D) . (D, n) -> (n, n)
    if positives:
        labels = pair_labels(zimg.shape[0], ztxt.shape[0], 0).astype(logits.dtype)
        return -jax.nn.log_sigmoid(labels * logits).sum()
    # Off-diagonal block: every pair is a negative, -log sigmoid(-x).
    return -jax.nn.log_sigmoid(-logits).sum()


@jaxtyped(typechecker=typechecker)
def sigmoid_loss_ring(
    zimg_local: Float[Array, "n D"],
    ztxt_local: Float[Array, "n D"],
    t: ScalarLike,
    b: ScalarLike,
    axis_name: str,
) -> Float[Array, ""]:
    """Global SigLIP loss with text chunks passed around a ring. Call inside ``shard_map``.

    The first block (own texts) holds the positives on its diagonal; after each
    of the k - 1 hops the device sees another device's texts, all negatives.
    Each (n, n) block is recomputed in the backward pass, so peak memory per
    device is O(n^2 + k n D) rather than the O(k n^2) of the all-gather.

    **Arguments:**

    - `zimg_local`, `ztxt_local`: this device's n rows of the L2-normalised
      image and text embeddings; row i is the positive pair
      ``axis_index * n + i`` of the global batch.
    - `t`: the temperature itself (not its log); `b`: the bias. Replicated.
    - `axis_name`: the mesh axis the batch is split over.

    **Returns:** the global loss, sum over all (k n)^2 pairs / (k n), the same
    scalar on every device.
    """
    n = zimg_local.shape[0]
    k = jax.lax.axis_size(axis_name)
    # Device i sends to i + 1, so after h hops it holds the texts of i - h.
    ring = [(i, (i + 1) % k) for i in range(k)]

    def hop(carry, _):
        ztxt_chunk, local_sum = carry
        ztxt_chunk = jax.lax.ppermute(ztxt_chunk, axis_name, perm=ring)  # (n, D)
        local_sum = local_sum + _block_loss_sum(zimg_local, ztxt_chunk, t, b, False)
        return (ztxt_chunk, local_sum), None

    # A scan, not a Python loop, so XLA cannot overlap blocks and hold several.
    first = _block_loss_sum(zimg_local, ztxt_local, t, b, True)
    (_, local_sum), _ = jax.lax.scan(hop, (ztxt_local, first), None, length=k - 1)
    return jax.lax.psum(local_sum, axis_name) / (k * n)


_VARIANTS = {"ring": sigmoid_loss_ring, "all_gather": sigmoid_loss_all_gather}


@jaxtyped(typechecker=typechecker)
def sharded_sigmoid_loss(
    zimg: Float[Array, "n D"],
    ztxt: Float[Array, "n D"],
    t: ScalarLike,
    b: ScalarLike,
    mesh: Mesh,
    axis_name: str = "data",
    variant: Literal["ring", "all_gather"] = "ring",
) -> Float[Array, ""]:
    """SigLIP loss of a global batch, sharded over ``mesh[axis_name]``.

    Equal (to float rounding) to `aced.losses.sigmoid_loss` on the same arrays,
    and so are its gradients with respect to `zimg`, `ztxt`, `t` and `b`.

    **Arguments:**

    - `zimg`, `ztxt`: the global (n, D) L2-normalised embeddings; the batch is
      split in k contiguous chunks over the k devices of `axis_name`.
    - `t`: the temperature itself (not its log); `b`: the bias. Replicated.
    - `mesh`: the device mesh; `axis_name`: the axis to split the batch over.
    - `variant`: ``"ring"`` (ppermute text chunks) or ``"all_gather"``.

    **Returns:** the scalar loss, sum over all n^2 pairs / n.
    """
    if variant not in _VARIANTS:
        raise ValueError(f"variant={variant!r} must be one of {sorted(_VARIANTS)}")
    if axis_name not in mesh.axis_names:
        raise ValueError(
            f"axis_name={axis_name!r} is not an axis of the mesh {mesh.axis_names}; "
            "pass one of them"
        )
    k = mesh.shape[axis_name]
    n = zimg.shape[0]
    if n % k != 0:
        raise ValueError(
            f"batch size {n} must be divisible by the {k} devices of mesh axis "
            f"{axis_name!r}; pad or trim the batch to a multiple of {k}"
        )
    local_loss = _VARIANTS[variant]
    batch, replicated = PartitionSpec(axis_name), PartitionSpec()
    loss = jax.shard_map(
        lambda zi, zt, t_, b_: local_loss(zi, zt, t_, b_, axis_name),
        mesh=mesh,
        in_specs=(batch, batch, replicated, replicated),
        out_specs=replicated,
    )
    dtype = zimg.dtype
    return loss(zimg, ztxt, jnp.asarray(t, dtype), jnp.asarray(b, dtype))


# ---- CONTRASTIVE_LOSSES: the learner's loss over a global batch sharded over a mesh axis


@dataclasses.dataclass(frozen=True)
class ContrastiveLoss:
    """A contrastive loss of global (sharded) embeddings.

    **Fields:**

    - `fn`: ``(zimg, ztxt, t, b, mesh, axis_name, variant) -> scalar``:
      `variant` is ``step.sharded_loss`` (how a sigmoid loss crosses devices;
      a loss may ignore it, as may it the bias).
    - `about`: one line for ``aced train --help``.
    """

    fn: Callable[..., Array]
    about: str = ""


def _sigmoid(zimg, ztxt, t, b, mesh, axis_name, variant):
    return sharded_sigmoid_loss(zimg, ztxt, t, b, mesh, axis_name=axis_name, variant=variant)


def _softmax(zimg, ztxt, t, b, mesh, axis_name, variant):
    del b, mesh, axis_name, variant  # bias-free; XLA all-gathers the sharded operands
    return softmax_loss(zimg, ztxt, t)


CONTRASTIVE_LOSSES: dict[str, ContrastiveLoss] = {
    "sigmoid": ContrastiveLoss(_sigmoid, "SigLIP sigmoid loss (sharded: ring or all-gather)"),
    "softmax": ContrastiveLoss(_softmax, "CLIP softmax (InfoNCE) loss, all-gathered"),
}


def register_contrastive_loss(
    name: str, loss: ContrastiveLoss, *, overwrite: bool = False
) -> ContrastiveLoss:
    """Register `loss` as `name` for ``step.contrastive``."""
    return register(CONTRASTIVE_LOSSES, "contrastive loss", name, loss, overwrite=overwrite)


def contrastive_loss(loss: "str | ContrastiveLoss") -> ContrastiveLoss:
    """The registered `ContrastiveLoss` named `loss` (an entry passes through)."""
    return lookup(CONTRASTIVE_LOSSES, "contrastive loss", loss)
