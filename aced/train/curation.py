"""Choosing the sub-batch inside the step: embeddings, pair scores and the selection rule.

Global scope selects over the all-gathered super-batch; local scope selects
within each device's shard inside ``shard_map``. The pair score, the rule and
the implementation (dense matrix or blocked kernel) all come from the
registries named by the `SelectionConfig`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float, Int, PRNGKeyArray

from aced.models import TwoTower
from aced.selection import (
    Embedded,
    independent_select,
    joint_select,
    joint_select_blocked,
    pair_score,
    per_example_scores,
    score_matrix,
    selection_rule,
)
from aced.train.config import StepConfig
from aced.train.sharding import AXIS, embed_sharded
from aced.train.state import SuperBatch


class Curated(NamedTuple):
    """What `curate` chose, and the views of the super-batch it chose from (no gradient).

    - `indices`: (b,) the positions in the super-batch, in the order the selection drew
      them (a uniform permutation's first b for IID and KD).
    - `learner`: the learner's scoring view of the super-batch (`learner_view`: the
      learner before the step, at Flexi scoring's image size); None without selection.
    - `reference`: the reference's view of the super-batch (`reference_view`); None
      when the method reads none.
    """

    indices: Int[Array, " b"]
    learner: Embedded | None
    reference: Embedded | None


def embedded(model: TwoTower, zimg: Float[Array, "n D"], ztxt: Float[Array, "n D"]) -> Embedded:
    """A model's `Embedded` view of embeddings it made (its temperature and bias)."""
    return Embedded(zimg=zimg, ztxt=ztxt, t=model.temperature, b=model.bias)


def take(x: Array, idx: Int[Array, " b"], mesh: Mesh) -> Array:
    """Rows `idx` of a sharded array, sharded again over ``data``."""
    out = jnp.take(x, idx, axis=0)
    return jax.lax.with_sharding_constraint(out, NamedSharding(mesh, P(AXIS)))


def select_indices(
    key: PRNGKeyArray, learner: Embedded, reference: Embedded, n_select: int, config: StepConfig
) -> Int[Array, " b"]:
    """Indices of the sub-batch within one (local or global) super-batch.

    Non-finite embeddings are not rejected here: under `jit` that check is a host
    callback, and JAX's persistent compilation cache never stores a program holding
    one (so every run would compile its step again). They make `curate`'s ``score/*``
    metrics non-finite instead, and ``aced train`` stops on those."""
    sel = config.selection
    score, rule = pair_score(sel.score), selection_rule(sel.rule)
    if not rule.joint:
        scores = per_example_scores(learner, reference, score)
        return independent_select(key, scores, n_select, rule=rule, check_finite=False)
    if sel.implementation_for(learner.zimg.shape[0]) == "blocked":
        return joint_select_blocked(
            key,
            learner,
            reference,
            score,
            n_select,
            sel.n_chunks,
            block=sel.block_sizes(),
            interpret=sel.interpret,
            rule=rule,
            check_finite=False,
        )
    matrix = score_matrix(learner, reference, score, block=sel.block_sizes())
    return joint_select(key, matrix, n_select, sel.n_chunks, rule=rule, check_finite=False)


def _fields(view: Embedded) -> tuple[Array, Array, Array, Array]:
    return view.zimg, view.ztxt, view.t, view.b


def _select(
    key: PRNGKeyArray,
    learner: Embedded,
    reference: Embedded,
    n_select: int,
    config: StepConfig,
    mesh: Mesh,
) -> Int[Array, " b"]:
    if config.selection.scope == "global":
        return select_indices(key, learner, reference, n_select, config)
    n_dev = mesh.shape[AXIS]

    def local(key, learner, reference):
        learner, reference = Embedded(*learner), Embedded(*reference)
        shard = jax.lax.axis_index(AXIS)
        idx = select_indices(
            jax.random.fold_in(key, shard), learner, reference, n_select // n_dev, config
        )
        return idx + shard * learner.zimg.shape[0]

    spec = (P(AXIS), P(AXIS), P(), P())
    return jax.shard_map(local, mesh=mesh, in_specs=(P(), spec, spec), out_specs=P(AXIS))(
        key, _fields(learner), _fields(reference)
    )


def reference_view(
    reference: TwoTower, batch: SuperBatch, config: StepConfig, mesh: Mesh
) -> Embedded:
    """The frozen reference's embeddings of the whole super-batch (cached or computed now)."""
    if config.reference_embeddings == "cached":
        if batch.reference_zimg is None or batch.reference_ztxt is None:
            raise ValueError(
                "reference_embeddings='cached' needs batch.reference_zimg / reference_ztxt; "
                "precompute them (aced.train.reference.cache_reference_embeddings) or use "
                "step.reference_embeddings=online"
            )
        view = embedded(reference, batch.reference_zimg, batch.reference_ztxt)
    else:
        view = embedded(reference, *embed_sharded(reference, batch.images, batch.tokens, mesh))
    return jax.lax.stop_gradient(view)


def scoring_images(images: Float[Array, "B H W C"], size: int) -> Float[Array, "B h w C"]:
    """The super-batch's images as the learner scores them: resized to ``size`` (linear,
    antialiased) for Flexi scoring, as they are when ``size`` is 0."""
    if not size or size == images.shape[1]:
        return images
    return jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), "linear")


def learner_view(learner: TwoTower, batch: SuperBatch, config: StepConfig, mesh: Mesh) -> Embedded:
    """The learner's embeddings of the super-batch for scoring (no gradient), at
    ``selection.score_image_size`` when Flexi scoring is on."""
    learner = jax.lax.stop_gradient(learner)
    size = config.selection.score_image_size
    images = scoring_images(batch.images, size)
    zimg, ztxt = embed_sharded(learner, images, batch.tokens, mesh, flexi=bool(size))
    return jax.lax.stop_gradient(embedded(learner, zimg, ztxt))


def curate(
    key: PRNGKeyArray,
    learner: TwoTower,
    reference: TwoTower | None,
    batch: SuperBatch,
    config: StepConfig,
    mesh: Mesh,
) -> tuple[Curated, dict[str, Array]]:
    """Choose the sub-batch: the configured selection (ACID, ACED) or uniform (IID, KD).

    **Returns:** the `Curated` indices (b global positions in the super-batch) and
    views, and score statistics (``score/all_mean``, ``score/selected_mean``; none
    without selection).
    """
    b = config.sub_batch_size(batch.images.shape[0])
    ref_all = None
    if config.uses_selection or config.reference_embeddings == "cached":
        ref_all = reference_view(reference, batch, config, mesh)
    if not config.uses_selection:
        idx = jax.random.permutation(key, batch.images.shape[0])[:b].astype(jnp.int32)
        return Curated(idx, None, ref_all), {}
    learner_all = learner_view(learner, batch, config, mesh)
    idx = _select(key, learner_all, ref_all, b, config, mesh)
    per_example = per_example_scores(learner_all, ref_all, config.selection.score)
    metrics = {
        "score/all_mean": per_example.mean(),
        "score/selected_mean": jnp.take(per_example, idx).mean(),
    }
    return Curated(idx, learner_all, ref_all), metrics
