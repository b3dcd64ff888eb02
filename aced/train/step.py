"""The one training step for IID, KD, ACID and ACED.

Data flow (DESIGN.md): super-batch (sharded over mesh axis ``data``) ->
learner and reference embeddings (``shard_map``, no gradient) -> pair scores
and the selection rule (`aced.train.curation`) -> gather of the sub-batch ->
contrastive loss (sharded) + ``weight * KD`` -> optax update. Every named
choice of the `StepConfig` (method, pair score, selection rule, contrastive
and KD loss) is looked up in its registry; nothing here branches on a name.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from beartype import beartype as typechecker
from jax.sharding import Mesh
from jaxtyping import Array, Float, Int, jaxtyped

from aced.flops import flexi_config, train_step_flops
from aced.losses import contrastive_loss, kd_loss
from aced.models import TwoTower, TwoTowerConfig
from aced.selection import Embedded, pair_score, selection_rule
from aced.train.config import StepConfig
from aced.train.curation import Curated, curate, embedded, take
from aced.train.sharding import AXIS, default_mesh, embed_sharded
from aced.train.state import SuperBatch, TrainState


def step_flops(
    learner: TwoTowerConfig,
    reference: TwoTowerConfig,
    config: StepConfig,
    super_batch: int,
    n_devices: int = 1,
    num_tokens: int | None = None,
) -> dict[str, int]:
    """`aced.flops.train_step_flops` for this step configuration (from its registry entries).

    `n_devices` is the mesh's device count: local scope selects on each
    device's shard, and global scope's blocked selection runs on every device
    (`aced.flops.selection_flops`). `num_tokens`: tokens per caption of the
    batch (default the text towers' ``max_len``).
    """
    sel = config.selection
    shards = n_devices if sel.scope == "local" else 1
    kd = kd_loss(config.distill.loss) if config.uses_kd else None
    return train_step_flops(
        learner,
        reference,
        super_batch=super_batch,
        sub_batch=config.sub_batch_size(super_batch),
        score=pair_score(sel.score) if config.uses_selection else None,
        rule=selection_rule(sel.rule),
        implementation=sel.implementation_for(super_batch // shards),
        n_chunks=sel.n_chunks,
        reference_cached=config.reference_embeddings == "cached",
        kd=kd,
        selection_scope=sel.scope,
        n_devices=n_devices,
        num_tokens=num_tokens,
        scoring_learner=flexi_config(learner, sel.score_image_size),
        kd_separate_batch=config.uses_kd
        and config.uses_selection
        and config.distill.batch == "iid",
        projection=kd is not None
        and kd.needs_projection
        and learner.embed_dim != reference.embed_dim,
        block=sel.block_sizes(),
    )


def kd_term(
    config: StepConfig, projection: eqx.nn.Linear | None, student: Embedded, teacher: Embedded
) -> Float[Array, ""]:
    """The unweighted KD term of ``config.distill`` between two views of one batch: the
    student projected to the teacher's width where the loss needs it, times tau ** 2 with
    ``distill.tau_squared``."""
    entry = kd_loss(config.distill.loss)
    if entry.needs_projection and projection is not None:
        student = Embedded(
            jax.vmap(projection)(student.zimg),
            jax.vmap(projection)(student.ztxt),
            student.t,
            student.b,
        )
    value = entry.fn(student, teacher, config.distill.temperature)
    if config.distill.tau_squared:
        value = value * config.distill.temperature**2
    return value


@jaxtyped(typechecker=typechecker)
def learner_update(
    state: TrainState,
    images: Float[Array, "b H W C"],
    tokens: Int[Array, "b L"],
    teacher: Embedded | None,
    kd_images: Float[Array, "b H W C"] | None,
    kd_tokens: Int[Array, "b L"] | None,
    config: StepConfig,
    mesh: Mesh,
) -> tuple:
    """The learner's gradient step on the sub-batch: loss terms, gradient, optax update.

    **Arguments:**

    - `state`: the current training state.
    - `images`, `tokens`: the sub-batch the contrastive loss trains on (sharded over ``data``).
    - `teacher`: the teacher's view of the KD batch (None without KD).
    - `kd_images`, `kd_tokens`: a separate KD batch (``distill.batch="iid"``), else None.
    - `config`, `mesh`: as for `train_step`.

    **Returns:** the updated ``(learner, projection)``, the new optimiser state,
    the total loss, the loss terms by name, and the gradient.
    """
    trainable, frozen = eqx.partition(state.trainable, eqx.is_inexact_array)
    # One vmap over the whole sub-batch: under a gradient, chunks (the CPU default
    # for inference) would stack every chunk's residuals and run slower.
    whole = images.shape[0]

    def loss_fn(trainable):
        learner, projection = eqx.combine(trainable, frozen)
        zimg, ztxt = embed_sharded(learner, images, tokens, mesh, batch_size=whole)
        losses = {
            "contrastive": contrastive_loss(config.contrastive).fn(
                zimg, ztxt, learner.temperature, learner.bias, mesh, AXIS, config.sharded_loss
            )
        }
        if config.uses_kd:
            student = embedded(learner, zimg, ztxt)
            if kd_images is not None:
                student = embedded(
                    learner, *embed_sharded(learner, kd_images, kd_tokens, mesh, batch_size=whole)
                )
            losses["kd"] = config.distill.weight * kd_term(config, projection, student, teacher)
        return sum(losses.values()), losses

    (total, losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes float ** int32 internally
        updates, opt_state = state.optimizer.update(grads, state.opt_state, trainable)
    return eqx.apply_updates(state.trainable, updates), opt_state, total, losses, grads


@jaxtyped(typechecker=typechecker)
def train_step(
    state: TrainState,
    batch: SuperBatch,
    reference: TwoTower | None,
    config: StepConfig,
    mesh: Mesh | None = None,
) -> tuple[TrainState, dict[str, Float[Array, ""]]]:
    """One optimisation step of IID, KD, ACID or ACED (chosen by ``config.method``).

    **Arguments:**

    - `state`: learner, optimiser state, step and PRNG key.
    - `batch`: the super-batch of B examples (sharded over ``mesh`` axis ``data``).
    - `reference`: the frozen reference model, also the teacher for KD. It only
      ever appears under ``stop_gradient``; it is never updated. None for IID
      with online embeddings, which never reads one.
    - `config`: the method and its settings (static under jit).
    - `mesh`: 1-D mesh with axis ``"data"``; default: all devices.

    **Returns:** the new state and a metrics dict: every loss term by name
    (``loss/contrastive``, ``loss/kd``, ``loss/total``), ``t``, ``b``,
    ``grad_norm``, score statistics of the selected vs all examples, and the
    step's analytic training FLOPs (``flops``).
    """
    state, metrics, _ = train_step_with_indices(state, batch, reference, config, mesh)
    return state, metrics


@jaxtyped(typechecker=typechecker)
def train_step_with_indices(
    state: TrainState,
    batch: SuperBatch,
    reference: TwoTower | None,
    config: StepConfig,
    mesh: Mesh | None = None,
) -> tuple[TrainState, dict[str, Float[Array, ""]], Int[Array, " b"]]:
    """`train_step`, also returning the b positions in the super-batch it trained on.

    The positions are for diagnostics read outside the step
    (`aced.train.diagnostics`): which examples were chosen, in the order the
    selection drew them (uniform for IID and KD).
    """
    state, metrics, curated = train_step_with_selection(state, batch, reference, config, mesh)
    return state, metrics, curated.indices


@jaxtyped(typechecker=typechecker)
def train_step_with_selection(
    state: TrainState,
    batch: SuperBatch,
    reference: TwoTower | None,
    config: StepConfig,
    mesh: Mesh | None = None,
) -> tuple[TrainState, dict[str, Float[Array, ""]], Curated]:
    """`train_step`, also returning what it selected and the views it selected from.

    The `aced.train.curation.Curated` positions and embeddings are the step's
    own: the selection diagnostics (`aced.train.diagnostics`) replay the draw on
    them instead of embedding the super-batch again.
    """
    mesh = default_mesh() if mesh is None else mesh
    B = batch.images.shape[0]
    b = config.check_shapes(B, mesh.shape[AXIS])
    if reference is None and (config.uses_selection or config.uses_kd):
        raise ValueError(f"method={config.method!r} needs a reference model; got None")
    key, select_key, kd_key = jax.random.split(state.key, 3)
    reference = jax.lax.stop_gradient(reference)
    curated, metrics = curate(select_key, state.learner, reference, batch, config, mesh)
    idx, ref_all = curated.indices, curated.reference

    images, tokens = take(batch.images, idx, mesh), take(batch.tokens, idx, mesh)

    teacher_sub = None
    kd_images = kd_tokens = None
    if config.uses_kd:
        kd_idx = idx
        if config.distill.batch == "iid" and config.uses_selection:
            kd_idx = jax.random.permutation(kd_key, B)[:b].astype(jnp.int32)
            kd_images = take(batch.images, kd_idx, mesh)
            kd_tokens = take(batch.tokens, kd_idx, mesh)
        if ref_all is not None:
            teacher_sub = Embedded(
                zimg=take(ref_all.zimg, kd_idx, mesh),
                ztxt=take(ref_all.ztxt, kd_idx, mesh),
                t=ref_all.t,
                b=ref_all.b,
            )
        else:  # KD without selection, online: the teacher embeds only the sub-batch
            ki = images if kd_images is None else kd_images
            kt = tokens if kd_tokens is None else kd_tokens
            teacher_sub = jax.lax.stop_gradient(
                embedded(reference, *embed_sharded(reference, ki, kt, mesh))
            )

    (new_learner, new_projection), opt_state, total, losses, grads = learner_update(
        state, images, tokens, teacher_sub, kd_images, kd_tokens, config, mesh
    )

    for name, value in losses.items():
        metrics[f"loss/{name}"] = value
    metrics["loss/total"] = total
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["t"] = new_learner.temperature
    metrics["b"] = new_learner.bias
    ref_config = state.learner.config if reference is None else reference.config
    flops = step_flops(
        state.learner.config, ref_config, config, B, mesh.shape[AXIS], batch.tokens.shape[1]
    )
    metrics["flops"] = jnp.asarray(float(flops["total"]))
    new_state = eqx.tree_at(
        lambda s: (s.step, s.learner, s.projection, s.opt_state, s.key),
        state,
        (state.step + 1, new_learner, new_projection, opt_state, key),
        is_leaf=lambda x: x is None,
    )
    return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}, curated


def make_train_step(
    config: StepConfig,
    mesh: Mesh | None = None,
    *,
    with_indices: bool = False,
    with_selection: bool = False,
) -> Callable:
    """``jit``-compiled ``step(state, batch, reference) -> (state, metrics)`` for a fixed config.

    With `with_indices`, ``-> (state, metrics, indices)`` (`train_step_with_indices`);
    with `with_selection`, ``-> (state, metrics, curated)`` (`train_step_with_selection`).
    """
    if with_indices and with_selection:
        raise ValueError("make_train_step: pass with_indices or with_selection, not both")
    mesh = default_mesh() if mesh is None else mesh
    fn = train_step
    if with_indices:
        fn = train_step_with_indices
    elif with_selection:
        fn = train_step_with_selection

    # Plain jax.jit, not eqx.filter_jit: every leaf of the state, the batch and the
    # reference is an array, so nothing needs filtering, and jax.jit dispatches through
    # its C++ fast path and returns before the step finishes (equinox 0.13's filter_jit
    # flattens the pytrees in Python and waits for every call); the outputs are the same.
    def step(state: TrainState, batch: SuperBatch, reference: TwoTower | None):
        return fn(state, batch, reference, config, mesh)

    return jax.jit(step)
