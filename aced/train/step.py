"""The one training step for IID, KD, ACID and ACED.

Data flow (DESIGN.md): super-batch (sharded over mesh axis ``data``) ->
learner and reference embeddings (``shard_map``, no gradient) -> pair scores
and joint selection -> gather of the sub-batch -> contrastive loss (sharded)
+ ``weight * KD`` -> optax update. The selection runs on all-gathered
embeddings (``scope="global"``) or inside ``shard_map`` per device
(``scope="local"``). Gathers between the two are left to XLA's partitioner.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from beartype import beartype as typechecker
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jaxtyping import Array, Float, Int, PRNGKeyArray, jaxtyped

from aced.flops import train_step_flops
from aced.losses import softmax_loss
from aced.losses.distill import feature_kd, sigmoid_kd, softmax_kd
from aced.losses.sharded import sharded_sigmoid_loss
from aced.models import TwoTower
from aced.selection import (
    Embedded,
    independent_select,
    joint_select,
    joint_select_blocked,
    score_matrix,
)
from aced.train.config import StepConfig
from aced.train.sharding import AXIS, default_mesh, embed_sharded
from aced.train.state import SuperBatch, TrainState


def embedded(model: TwoTower, zimg: Float[Array, "n D"], ztxt: Float[Array, "n D"]) -> Embedded:
    return Embedded(zimg=zimg, ztxt=ztxt, t=model.temperature, b=model.bias)


def _per_example_scores(learner: Embedded, reference: Embedded, score: str) -> Float[Array, " n"]:
    """Each example's own (diagonal) pair score: O(n d), used for diagnostics and `independent`."""

    def positive_loss(e: Embedded) -> Float[Array, " n"]:
        logits = e.t * jnp.sum(e.zimg * e.ztxt, axis=1) + e.b
        return -jax.nn.log_sigmoid(logits)

    if score == "learnability":
        return positive_loss(learner) - positive_loss(reference)
    if score == "easy_reference":
        return -positive_loss(reference)
    return positive_loss(learner)


def select_indices(
    key: PRNGKeyArray, learner: Embedded, reference: Embedded, n_select: int, config: StepConfig
) -> Int[Array, " b"]:
    """Indices of the sub-batch within one (local or global) super-batch."""
    sel = config.selection
    n = learner.zimg.shape[0]
    if sel.selection == "independent":
        return independent_select(
            key, _per_example_scores(learner, reference, sel.score), n_select, greedy=sel.greedy
        )
    if uses_blocked_selection(config, n):
        return joint_select_blocked(
            key, learner, reference, sel.score, n_select, sel.n_chunks,
            interpret=sel.interpret, greedy=sel.greedy,
        )
    scores = score_matrix(learner, reference, sel.score)
    return joint_select(key, scores, n_select, sel.n_chunks, greedy=sel.greedy)


def _select(
    key: PRNGKeyArray, learner: Embedded, reference: Embedded, n_select: int,
    config: StepConfig, mesh: Mesh,
) -> Int[Array, " b"]:
    if config.selection.scope == "global":
        return select_indices(key, learner, reference, n_select, config)
    n_dev = mesh.shape[AXIS]

    def local(key, learner, reference):
        learner, reference = Embedded(*learner), Embedded(*reference)
        shard = jax.lax.axis_index(AXIS)
        idx = select_indices(jax.random.fold_in(key, shard), learner, reference,
                             n_select // n_dev, config)
        return idx + shard * learner.zimg.shape[0]

    spec = (P(AXIS), P(AXIS), P(), P())
    # check_vma=False: eqx.error_if's cond (the non-finite check) has no varying-axis
    # rule; nothing here is differentiated.
    return jax.shard_map(
        local, mesh=mesh, in_specs=(P(), spec, spec), out_specs=P(AXIS), check_vma=False
    )(
        key, learner.flat(), reference.flat()
    )


def _kd_loss(
    config: StepConfig, projection: eqx.nn.Linear | None,
    student: Embedded, teacher: Embedded,
) -> Float[Array, ""]:
    d = config.distill
    if d.loss == "feature":
        zimg, ztxt = student.zimg, student.ztxt
        if projection is not None:
            zimg, ztxt = jax.vmap(projection)(zimg), jax.vmap(projection)(ztxt)
        return 0.5 * (feature_kd(zimg, teacher.zimg, d.feature_kind)
                      + feature_kd(ztxt, teacher.ztxt, d.feature_kind))
    if d.loss == "softmax":  # softmax is bias-invariant: temperature-scaled similarities only
        s = student.t * (student.zimg @ student.ztxt.T)
        t = teacher.t * (teacher.zimg @ teacher.ztxt.T)
        return softmax_kd(s, t, d.temperature)
    s = student.t * (student.zimg @ student.ztxt.T) + student.b
    t = teacher.t * (teacher.zimg @ teacher.ztxt.T) + teacher.b
    return sigmoid_kd(s, t, d.temperature)


def uses_blocked_selection(config: StepConfig, n: int) -> bool:
    """Whether a joint selection over n examples runs the blocked Pallas path."""
    sel = config.selection
    return sel.implementation == "blocked" or (sel.implementation == "auto" and n > sel.blocked_threshold)


def step_flops(
    learner, reference, config: StepConfig, super_batch: int, n_devices: int = 1
) -> dict[str, int]:
    """`aced.flops.train_step_flops` for this step configuration."""
    sel = config.selection
    groups = n_devices if sel.scope == "local" else 1
    kind = None
    if config.uses_selection:
        kind = "independent" if sel.selection == "independent" else (
            "blocked" if uses_blocked_selection(config, super_batch // groups) else "dense")
    return train_step_flops(
        learner, reference,
        super_batch=super_batch, sub_batch=config.sub_batch_size(super_batch),
        selection=kind, score_models=2 if sel.score == "learnability" else 1,
        n_chunks=sel.n_chunks, reference_cached=config.reference_embeddings == "cached",
        kd=config.uses_kd, selection_groups=groups,
        kd_separate_batch=config.uses_kd and config.uses_selection and config.distill.batch == "iid",
    )


def _take(x: Array, idx: Int[Array, " b"], mesh: Mesh) -> Array:
    out = jnp.take(x, idx, axis=0)
    return jax.lax.with_sharding_constraint(out, NamedSharding(mesh, P(AXIS)))


def check_step_shapes(config: StepConfig, super_batch: int, n_devices: int) -> int:
    """Validate the batch geometry eagerly; return the sub-batch size b."""
    b = config.sub_batch_size(super_batch)
    if super_batch % n_devices:
        raise ValueError(
            f"super-batch B={super_batch} must be divisible by the {n_devices} devices of the mesh"
        )
    if b < 1:
        raise ValueError(f"sub-batch b=(1-f)*B={b} is empty: lower selection.filter_ratio")
    if b % n_devices:
        raise ValueError(
            f"sub-batch b=(1-f)*B={b} must be divisible by the {n_devices} devices; "
            "change the super-batch size or selection.filter_ratio"
        )
    if config.uses_selection and config.selection.selection == "joint":
        per = b // n_devices if config.selection.scope == "local" else b
        if per % config.selection.n_chunks:
            raise ValueError(
                f"n_select={per} (sub-batch{' per device' if config.selection.scope == 'local' else ''})"
                f" must be divisible by selection.n_chunks={config.selection.n_chunks}"
            )
    return b


def reference_view(
    reference: TwoTower, batch: SuperBatch, config: StepConfig, mesh: Mesh
) -> Embedded:
    """The frozen reference's embeddings of the whole super-batch (cached or computed now)."""
    if config.reference_embeddings == "cached":
        if batch.reference_zimg is None or batch.reference_ztxt is None:
            raise ValueError(
                "reference_embeddings='cached' needs batch.reference_zimg / reference_ztxt; "
                "precompute them (aced.train.loop.cache_reference_embeddings) or use 'online'"
            )
        view = embedded(reference, batch.reference_zimg, batch.reference_ztxt)
    else:
        view = embedded(reference, *embed_sharded(reference, batch.images, batch.tokens, mesh))
    return jax.lax.stop_gradient(view)


def curate(
    key: PRNGKeyArray,
    learner: TwoTower,
    reference: TwoTower,
    batch: SuperBatch,
    config: StepConfig,
    mesh: Mesh,
) -> tuple[Int[Array, " b"], Embedded | None, dict[str, Array]]:
    """Choose the sub-batch: joint / independent selection (ACID, ACED) or uniform (IID, KD).

    **Returns:** the b global indices into the super-batch, the reference's view
    of the super-batch when one was needed (else None), and score statistics.
    """
    b = config.sub_batch_size(batch.images.shape[0])
    ref_all = None
    if config.uses_selection or config.reference_embeddings == "cached":
        ref_all = reference_view(reference, batch, config, mesh)
    if not config.uses_selection:
        idx = jax.random.permutation(key, batch.images.shape[0])[:b].astype(jnp.int32)
        return idx, ref_all, {}
    learner = jax.lax.stop_gradient(learner)
    learner_all = jax.lax.stop_gradient(
        embedded(learner, *embed_sharded(learner, batch.images, batch.tokens, mesh))
    )
    idx = _select(key, learner_all, ref_all, b, config, mesh)
    per_example = _per_example_scores(learner_all, ref_all, config.selection.score)
    metrics = {
        "score/all_mean": per_example.mean(),
        "score/selected_mean": jnp.take(per_example, idx).mean(),
    }
    return idx, ref_all, metrics


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
        t, bias = learner.temperature, learner.bias
        losses = {}
        if config.contrastive == "sigmoid":
            losses["contrastive"] = sharded_sigmoid_loss(
                zimg, ztxt, t, bias, mesh, axis_name=AXIS, variant=config.sharded_loss
            )
        else:
            losses["contrastive"] = softmax_loss(zimg, ztxt, t)
        if config.uses_kd:
            student = embedded(learner, zimg, ztxt)
            if kd_images is not None:
                student = embedded(learner, *embed_sharded(
                    learner, kd_images, kd_tokens, mesh, batch_size=whole))
            losses["kd"] = config.distill.weight * _kd_loss(config, projection, student, teacher)
        return sum(losses.values()), losses

    (total, losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes float ** int32 internally
        updates, opt_state = state.optimizer.update(grads, state.opt_state, trainable)
    return eqx.apply_updates(state.trainable, updates), opt_state, total, losses, grads


@jaxtyped(typechecker=typechecker)
def train_step(
    state: TrainState,
    batch: SuperBatch,
    reference: TwoTower,
    config: StepConfig,
    mesh: Mesh | None = None,
) -> tuple[TrainState, dict[str, Float[Array, ""]]]:
    """One optimisation step of IID, KD, ACID or ACED (chosen by ``config.method``).

    **Arguments:**

    - `state`: learner, optimiser state, step and PRNG key.
    - `batch`: the super-batch of B examples (sharded over ``mesh`` axis ``data``).
    - `reference`: the frozen reference model, also the teacher for KD. It only
      ever appears under ``stop_gradient``; it is never updated.
    - `config`: the method and its settings (static under jit).
    - `mesh`: 1-D mesh with axis ``"data"``; default: all devices.

    **Returns:** the new state and a metrics dict: every loss term by name
    (``loss/contrastive``, ``loss/kd``, ``loss/total``), ``t``, ``b``,
    ``grad_norm``, score statistics of the selected vs all examples, and the
    step's analytic training FLOPs (``flops``).
    """
    mesh = default_mesh() if mesh is None else mesh
    B = batch.images.shape[0]
    b = check_step_shapes(config, B, mesh.shape[AXIS])
    key, select_key, kd_key = jax.random.split(state.key, 3)
    reference = jax.lax.stop_gradient(reference)
    idx, ref_all, metrics = curate(select_key, state.learner, reference, batch, config, mesh)

    images, tokens = _take(batch.images, idx, mesh), _take(batch.tokens, idx, mesh)

    teacher_sub = None
    kd_images = kd_tokens = None
    if config.uses_kd:
        kd_idx = idx
        if config.distill.batch == "iid" and config.uses_selection:
            kd_idx = jax.random.permutation(kd_key, B)[:b].astype(jnp.int32)
            kd_images, kd_tokens = _take(batch.images, kd_idx, mesh), _take(batch.tokens, kd_idx, mesh)
        if ref_all is not None:
            teacher_sub = Embedded(zimg=_take(ref_all.zimg, kd_idx, mesh),
                                   ztxt=_take(ref_all.ztxt, kd_idx, mesh), t=ref_all.t, b=ref_all.b)
        else:  # KD without selection, online: the teacher embeds only the sub-batch
            ki = images if kd_images is None else kd_images
            kt = tokens if kd_tokens is None else kd_tokens
            teacher_sub = jax.lax.stop_gradient(embedded(reference, *embed_sharded(reference, ki, kt, mesh)))

    (new_learner, new_projection), opt_state, total, losses, grads = learner_update(
        state, images, tokens, teacher_sub, kd_images, kd_tokens, config, mesh
    )

    for name, value in losses.items():
        metrics[f"loss/{name}"] = value
    metrics["loss/total"] = total
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["t"] = new_learner.temperature
    metrics["b"] = new_learner.bias
    metrics["flops"] = jnp.asarray(float(step_flops(state.learner.config, reference.config, config, B, mesh.shape[AXIS])["total"]))
    new_state = eqx.tree_at(
        lambda s: (s.step, s.learner, s.projection, s.opt_state, s.key),
        state,
        (state.step + 1, new_learner, new_projection, opt_state, key),
        is_leaf=lambda x: x is None,
    )
    return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}


def make_train_step(config: StepConfig, mesh: Mesh | None = None) -> Callable:
    """``jit``-compiled ``step(state, batch, reference) -> (state, metrics)`` for a fixed config."""
    mesh = default_mesh() if mesh is None else mesh

    @eqx.filter_jit
    def step(state: TrainState, batch: SuperBatch, reference: TwoTower):
        return train_step(state, batch, reference, config, mesh)

    return step
