"""Properties of one train step: replayed by hand on the chosen batch, the learner's scores
from its parameters before the update, the KD batch (selected or IID), weight decay's mask
and amount, and Hinton's tau ** 2 factor."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh
from step_problem import B, aced_config, sgd_state, tiny_batch, tiny_models

from aced.losses import sigmoid_loss
from aced.train.config import DistillConfig, OptimConfig, StepConfig
from aced.train.curation import curate
from aced.train.state import make_optimizer
from aced.train.step import kd_term, make_train_step
from aced.types import Embedded


@pytest.fixture(scope="module")
def problem():
    learner, reference = tiny_models()
    return learner, reference, tiny_batch(), Mesh(np.array(jax.devices()[:1]), ("data",))


def leaves(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))


def view(model, images, tokens) -> Embedded:
    return Embedded(
        model.embed_images(images), model.embed_texts(tokens), model.temperature, model.bias
    )


def plain_step(state, batch, reference, config, idx, kd_idx):
    """The step written out: SigLIP on batch[idx], plus weight * KD on batch[kd_idx] against
    the reference's view of those rows, then the optimiser's update."""
    optimizer = state.optimizer

    @eqx.filter_jit
    def step(learner):
        trainable, frozen = eqx.partition(learner, eqx.is_inexact_array)
        teacher = view(reference, batch.images[kd_idx], batch.tokens[kd_idx])

        def loss(trainable):
            m = eqx.combine(trainable, frozen)
            student = view(m, batch.images[idx], batch.tokens[idx])
            contrastive = sigmoid_loss(student.zimg, student.ztxt, student.t, student.b)
            if kd_idx is not idx:
                student = view(m, batch.images[kd_idx], batch.tokens[kd_idx])
            return contrastive + config.distill.weight * kd_term(config, None, student, teacher)

        grads = jax.grad(loss)(trainable)
        with jax.numpy_dtype_promotion("standard"):
            updates, _ = optimizer.update(grads, optimizer.init(trainable), trainable)
        return eqx.apply_updates(learner, updates)

    return step(state.learner)


def assert_close(a, b):
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kd_batch", ["selected", "iid"])
def test_aced_step_is_a_plain_step_on_the_chosen_batch(problem, kd_batch):
    learner, reference, batch, mesh = problem
    config = aced_config()
    config = dataclasses.replace(
        config, distill=dataclasses.replace(config.distill, batch=kd_batch)
    )
    state = sgd_state(learner, config)
    new, _, curated = make_train_step(config, mesh, with_selection=True)(state, batch, reference)
    idx = jnp.asarray(curated.indices)
    _, select_key, kd_key = jax.random.split(state.key, 3)
    # IIDistill: its own uniform draw of b from the step's third key; ACIDistill: the chosen rows
    kd_idx = jax.random.permutation(kd_key, B)[: idx.shape[0]] if kd_batch == "iid" else idx
    assert_close(new.learner, plain_step(state, batch, reference, config, idx, kd_idx))
    # the learner scored the super-batch with its parameters before the update, and the
    # step returns the views it selected from (what the selection diagnostics replay on)
    again = jax.jit(lambda k, lrn: curate(k, lrn, reference, batch, config, mesh)[0])
    before = again(select_key, state.learner)
    np.testing.assert_array_equal(before.indices, idx)
    for got, want in ((curated.learner, before.learner), (curated.reference, before.reference)):
        assert_close(got, want)
    assert not np.array_equal(again(select_key, new.learner).indices, idx)
    if kd_batch == "iid":  # and the KD rows are not the selected ones
        assert set(np.asarray(kd_idx).tolist()) != set(np.asarray(idx).tolist())


def test_weight_decay_takes_lr_times_decay_off_matrices_only(problem):
    learner = problem[0]
    lr, decay = 0.01, 0.1
    optimizer = make_optimizer(
        OptimConfig(learning_rate=lr, weight_decay=decay, warmup_steps=0, grad_clip_norm=0.0)
    )
    params = eqx.filter(learner, eqx.is_inexact_array)

    @jax.jit  # one program, not one per operation and leaf shape
    def update(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes float ** int32 internally
            updates, _ = optimizer.update(zeros, optimizer.init(params), params)
        return eqx.apply_updates(params, updates)

    new = update(params)
    decayed, kept = [], []
    for (path, old), now in zip(
        jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(new), strict=True
    ):
        # by name, independently of decay_mask's layer types: LayerNorms (norm, norm1,
        # norm2), biases and the log-temperature are kept; weights and embeddings decayed
        names = [k.name for k in path]
        keep = names[-1] in ("bias", "log_temperature") or names[-2].startswith("norm")
        (kept if keep else decayed).append((old, now, jax.tree_util.keystr(path)))
    assert decayed and kept
    for old, now, owner in kept:  # LayerNorm, every bias, t and b: bit-identical
        np.testing.assert_array_equal(np.asarray(now), np.asarray(old), err_msg=str(owner))
    for old, now, owner in decayed:  # p - lr * decay * p
        np.testing.assert_allclose(now, old * (1 - lr * decay), rtol=1e-6, err_msg=str(owner))
    # the stacked blocks' LayerNorm scales are (depth, W), yet kept
    assert any(old.ndim == 2 and ".blocks.norm1.weight" in name for old, _, name in kept)


@pytest.mark.parametrize("loss", ["softmax", "softmax_kl", "sigmoid"])
def test_tau_squared_keeps_the_kd_gradient_scale_across_tau(loss):
    rng = np.random.default_rng(0)
    n, d = 8, 16

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    z = [jnp.asarray(unit(rng.standard_normal((n, d))), jnp.float32) for _ in range(4)]
    t, b = jnp.asarray(0.05), jnp.asarray(0.0)  # small logits: |t * cos| <= 0.05
    teacher = Embedded(z[2], z[3], t, b)

    def grad_norm(tau, squared):
        distill = DistillConfig(weight=1.0, loss=loss, temperature=tau, tau_squared=squared)
        config = StepConfig(method="kd", distill=distill)
        g = jax.grad(lambda zi: kd_term(config, None, Embedded(zi, z[1], t, b), teacher))(z[0])
        return float(jnp.linalg.norm(g))

    base = grad_norm(1.0, True)
    for tau in (2.0, 4.0):
        assert grad_norm(tau, True) == pytest.approx(base, rel=0.05)
        # without the factor the gradient shrinks as 1 / tau ** 2 (so the test has power)
        assert grad_norm(tau, False) == pytest.approx(base / tau**2, rel=0.05)


def test_tau_squared_needs_a_tempered_loss():
    with pytest.raises(ValueError, match="has no temperature"):
        DistillConfig(weight=1.0, loss="feature", tau_squared=True)
    assert optax  # the optimiser above is optax's adamw (make_optimizer)
