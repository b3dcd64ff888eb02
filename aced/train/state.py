"""Training state, the super-batch container and the optimiser factory."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from aced.losses import kd_loss
from aced.models import TwoTower
from aced.models.transformer import Linear
from aced.train.config import OptimConfig, StepConfig


class SuperBatch(eqx.Module):
    """B image-text pairs drawn for one step, before selection.

    `index` holds global example ids (used to look up cached reference
    embeddings). `reference_zimg` / `reference_ztxt` are the frozen reference's
    embeddings of these examples when `reference_embeddings="cached"`.
    """

    images: Float[Array, "B H W C"]
    tokens: Int[Array, "B L"]
    index: Int[Array, " B"]
    reference_zimg: Float[Array, "B D"] | None = None
    reference_ztxt: Float[Array, "B D"] | None = None


class TrainState(eqx.Module):
    """What changes from step to step. The reference / teacher is NOT here: it is frozen.

    `projection` maps learner embeddings to the teacher's width for feature KD
    when the two widths differ (trained with the learner); otherwise None.
    """

    step: Int[Array, ""]
    learner: TwoTower
    projection: eqx.nn.Linear | None
    opt_state: optax.OptState
    key: PRNGKeyArray
    optimizer: optax.GradientTransformation = eqx.field(static=True)

    @property
    def trainable(self) -> tuple[TwoTower, eqx.nn.Linear | None]:
        return self.learner, self.projection


def decay_mask(params):
    """Which leaves weight decay applies to: True for weight matrices and embeddings.

    Never decayed: LayerNorm scales and offsets, every bias, the temperature and
    bias scalars. Decided by each leaf's layer, not its rank, because the
    stacked transformer blocks (`aced.models.transformer.make_blocks`) carry a
    leading depth axis: a block's LayerNorm scale is (depth, W), yet a vector.
    """

    def layer(node):
        if isinstance(node, eqx.nn.LayerNorm):
            return jax.tree.map(lambda x: False, node)
        if isinstance(node, Linear | eqx.nn.Linear):
            mask = jax.tree.map(lambda x: False, node)
            return eqx.tree_at(lambda m: m.weight, mask, True)
        return node.ndim >= 2 if eqx.is_array(node) else node

    def is_layer(node):
        return isinstance(node, eqx.nn.LayerNorm | Linear | eqx.nn.Linear)

    return jax.tree.map(layer, params, is_leaf=is_layer)


@functools.lru_cache(maxsize=16)
def make_optimizer(config: OptimConfig) -> optax.GradientTransformation:
    """AdamW, warm-up + cosine (or constant), clipping; weight decay on matrices only.

    optax's `adamw` multiplies ``weight_decay`` by the learning rate: each step
    takes ``lr_t * weight_decay * p`` off every decayed parameter (`decay_mask`),
    besides the Adam update.

    Cached per configuration: the optimiser is a static field of `TrainState`,
    so an equal configuration must give the same object or the step recompiles.
    """
    warmup = config.warmup_steps
    if config.decay_steps:
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, config.learning_rate, warmup, warmup + config.decay_steps
        )
    elif warmup:
        schedule = optax.join_schedules(
            [
                optax.linear_schedule(0.0, config.learning_rate, warmup),
                optax.constant_schedule(config.learning_rate),
            ],
            [warmup],
        )
    else:
        schedule = optax.constant_schedule(config.learning_rate)
    adamw = optax.adamw(
        schedule,
        b1=config.b1,
        b2=config.b2,
        eps=config.eps,
        weight_decay=config.weight_decay,
        mask=decay_mask,
    )
    if config.grad_clip_norm:
        return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), adamw)
    return adamw


def init_train_state(
    learner: TwoTower,
    config: StepConfig,
    key: PRNGKeyArray,
    *,
    teacher_width: int | None = None,
    optimizer: optax.GradientTransformation | None = None,
) -> TrainState:
    """Build the initial `TrainState`.

    **Arguments:**

    - `learner`: the student two-tower model.
    - `config`: the step configuration (optimiser, KD form).
    - `key`: PRNG key for selection noise and IID draws.
    - `teacher_width`: the teacher's embedding width; with a KD loss that
      compares embeddings (``KDLoss.needs_projection``) and a width different
      from the learner's, a learned projection is created.
    - `optimizer`: replaces the one built from ``config.optim`` (e.g. plain SGD).
    """
    proj_key, key = jax.random.split(key)
    projection = None
    student_width = learner.config.embed_dim
    if (
        config.uses_kd
        and kd_loss(config.distill.loss).needs_projection
        and teacher_width is not None
        and teacher_width != student_width
    ):
        projection = eqx.nn.Linear(student_width, teacher_width, key=proj_key)
    optimizer = make_optimizer(config.optim) if optimizer is None else optimizer
    trainable = eqx.filter((learner, projection), eqx.is_inexact_array)
    return TrainState(
        step=jnp.array(0, jnp.int32),
        learner=learner,
        projection=projection,
        opt_state=optimizer.init(trainable),
        key=key,
        optimizer=optimizer,
    )
