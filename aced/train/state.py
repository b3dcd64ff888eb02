"""Training state, the super-batch container and the optimiser factory."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from aced.losses import kd_loss
from aced.models import TwoTower
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


@functools.lru_cache(maxsize=16)
def make_optimizer(config: OptimConfig) -> optax.GradientTransformation:
    """AdamW, warm-up + cosine (or constant), clipping; no weight decay on vectors and scalars.

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
        mask=lambda params: jax.tree.map(lambda x: x.ndim >= 2, params),
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
