"""The train step: equivalence with a plain SigLIP step, 1 vs 8 devices, compile-once,
frozen reference, cached reference embeddings, local selection, FLOPs, bad input."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from step_problem import (
    OPTIM,
    B,
    V,
    aced_config,
    sgd_state,
    tiny_batch,
    tiny_models,
    wide_config,
)
from step_problem import (
    step_config as method_preset,
)

from aced.losses import sigmoid_loss, softmax_kd
from aced.models import TwoTower
from aced.train.config import SelectionConfig
from aced.train.curation import curate
from aced.train.sharding import replicate, shard_batch
from aced.train.state import SuperBatch, init_train_state
from aced.train.step import make_train_step, step_flops, train_step


def mesh_of(n):
    return Mesh(np.array(jax.devices()[:n]), ("data",))


@pytest.fixture(scope="module")
def models():
    return tiny_models()


@pytest.fixture(scope="module")
def batch():
    return tiny_batch()


def params(model):
    return jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(params(a), params(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_iid_without_filtering_equals_plain_siglip_step(models, batch):
    learner, reference = models
    config = method_preset("iid", selection=SelectionConfig(filter_ratio=0.0), optim=OPTIM)
    state = sgd_state(learner, config)
    optimizer = state.optimizer
    new_state, metrics = make_train_step(config, mesh_of(1))(state, batch, reference)

    @eqx.filter_jit  # one compile, not one per eager op
    def plain_step(learner):
        trainable, frozen = eqx.partition(learner, eqx.is_inexact_array)

        def loss(trainable):
            m = eqx.combine(trainable, frozen)
            return sigmoid_loss(
                m.embed_images(batch.images), m.embed_texts(batch.tokens), m.temperature, m.bias
            )

        value, grads = jax.value_and_grad(loss)(trainable)
        with jax.numpy_dtype_promotion("standard"):
            updates, _ = optimizer.update(grads, optimizer.init(trainable), trainable)
        return value, eqx.apply_updates(learner, updates)

    value, plain = plain_step(learner)
    np.testing.assert_allclose(metrics["loss/contrastive"], value, rtol=1e-5)
    assert_trees_close(new_state.learner, plain)
    assert not np.allclose(params(plain)[0], params(learner)[0])  # the step did move


# jax.monitoring's events of tracing a function and of compiling one (jax._src.dispatch)
TRACE_OR_COMPILE = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/backend_compile_duration",
)


def two_aced_steps(models, batch, n_devices):
    """Two ACED steps on `n_devices`, the inputs laid out as the loop lays them out: the
    final state, each step's chosen positions, the last metrics, and each step's trace and
    compile events (the second step is fed the first one's outputs)."""
    learner, reference = models
    config = aced_config()
    mesh = mesh_of(n_devices)
    state = replicate(sgd_state(learner, config), mesh)
    batch, reference = shard_batch(batch, mesh), replicate(reference, mesh)
    step = make_train_step(config, mesh, with_indices=True)
    chosen, events = [], []
    for _ in range(2):
        seen = []

        def listen(event, duration, seen=seen, **kwargs):
            if event in TRACE_OR_COMPILE:
                seen.append(event)

        jax.monitoring.register_event_duration_secs_listener(listen)
        try:
            state, metrics, indices = step(state, batch, reference)
        finally:
            jax.monitoring.unregister_event_duration_listener(listen)
        chosen.append(np.asarray(indices))
        events.append(seen)
    return state, chosen, metrics, events


@pytest.fixture(scope="module")
def eight_device_run(models, batch):
    return two_aced_steps(models, batch, 8)


def test_global_selection_is_the_same_on_1_and_8_devices(models, batch, eight_device_run):
    (one, chosen_one, *_), (eight, chosen_eight, *_) = (
        two_aced_steps(models, batch, 1),
        eight_device_run,
    )
    for a, b in zip(chosen_one, chosen_eight, strict=True):
        np.testing.assert_array_equal(a, b)
        assert len(set(a.tolist())) == B // 2
    assert not np.array_equal(chosen_one[0], chosen_one[1])  # a fresh draw each step
    assert_trees_close(one.learner, eight.learner)
    np.testing.assert_array_equal(jax.random.key_data(one.key), jax.random.key_data(eight.key))


def test_step_compiles_once(eight_device_run):
    """The second step, fed the first one's sharded outputs, neither traces nor compiles."""
    state, _, metrics, (first, second) = eight_device_run
    assert TRACE_OR_COMPILE[0] in first  # the listener does see a trace (a compile may be cached)
    assert second == []
    assert int(state.step) == 2
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert metrics["loss/kd"] > 0


def test_reference_gets_no_gradient(models, batch):
    """The reference enters the step only through `curate`'s view of it, under stop_gradient:
    a loss built on that view (the KD term) sends nothing back to the reference."""
    learner, reference = models
    config = aced_config()
    mesh = mesh_of(1)
    student = eqx.filter_jit(lambda m, b: (m.embed_images(b.images), m.embed_texts(b.tokens)))(
        learner, batch
    )
    ref_params, ref_static = eqx.partition(reference, eqx.is_inexact_array)

    def kd_through_curate(ref_params, stop):
        ref = eqx.combine(ref_params, ref_static)
        view = curate(jax.random.key(0), learner, ref, batch, config, mesh)[0].reference
        if not stop:  # the same loss on embeddings that were not stopped: gradient flows
            view = type(view)(
                ref.embed_images(batch.images), ref.embed_texts(batch.tokens), view.t, view.b
            )
        logits = view.t * (view.zimg @ view.ztxt.T)
        return softmax_kd(view.t * (student[0] @ student[1].T), logits)

    grad = jax.jit(jax.grad(kd_through_curate), static_argnums=1)
    stopped = grad(ref_params, True)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(stopped))
    flowing = grad(ref_params, False)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(flowing)) > 0.0


def test_cached_reference_embeddings_equal_online(models, batch):
    learner, reference = models
    selection = SelectionConfig(filter_ratio=0.5, n_chunks=4)
    online = method_preset("acid", selection=selection, optim=OPTIM)
    cached = dataclasses.replace(online, reference_embeddings="cached")
    with_cache = dataclasses.replace(
        batch,
        reference_zimg=reference.embed_images(batch.images),
        reference_ztxt=reference.embed_texts(batch.tokens),
    )
    mesh = mesh_of(1)
    key = jax.random.key(5)
    a, _ = make_train_step(online, mesh)(init_train_state(learner, online, key), batch, reference)
    b, _ = make_train_step(cached, mesh)(
        init_train_state(learner, cached, key), with_cache, reference
    )
    assert_trees_close(a.learner, b.learner)
    with pytest.raises(ValueError, match="cached"):
        make_train_step(cached, mesh)(init_train_state(learner, cached, key), batch, reference)


def test_local_scope_selects_within_each_shard(models, batch):
    learner, reference = models
    config = method_preset(
        "acid", selection=SelectionConfig(filter_ratio=0.5, n_chunks=2, scope="local"), optim=OPTIM
    )
    n_dev = 4
    idx = jax.jit(
        lambda k, lrn, ref, bt: curate(k, lrn, ref, bt, config, mesh_of(n_dev))[0].indices
    )(jax.random.key(1), learner, reference, batch)
    idx = np.asarray(idx).reshape(n_dev, -1)
    shard = B // n_dev
    for device, chosen in enumerate(idx):
        assert len(set(chosen.tolist())) == shard // 2
        assert ((chosen >= device * shard) & (chosen < (device + 1) * shard)).all()


@pytest.mark.parametrize(
    "filter_ratio, n_chunks, super_batch, devices, message",
    [
        (0.5, 3, 64, 1, r"n_select=32 .* divisible by selection.n_chunks=3"),
        (0.5, 1, 48, 16, r"sub-batch b=\(1-f\)\*B=24 must be divisible by the 16 devices"),
        (0.5, 1, 50, 8, r"super-batch B=50 must be divisible by the 8 devices"),
        (0.99, 1, 16, 1, r"is empty"),
    ],
)
def test_bad_geometry_is_rejected(filter_ratio, n_chunks, super_batch, devices, message):
    config = method_preset(
        "acid", selection=SelectionConfig(filter_ratio=filter_ratio, n_chunks=n_chunks)
    )
    with pytest.raises(ValueError, match=message):
        config.check_shapes(super_batch, devices)


def test_a_step_returns_indices_or_the_selection_not_both():
    with pytest.raises(ValueError, match="with_indices or with_selection, not both"):
        make_train_step(aced_config(), mesh_of(1), with_indices=True, with_selection=True)


@pytest.mark.parametrize("method", ["iid", "aced"])
def test_step_flops_match_xla_cost_analysis(method):
    """Analytic step FLOPs within 5 % of XLA's count of the lowered step.

    Depth-1 towers, so that XLA's once-per-scan-body count is the full count,
    and width 256 so that matmuls dominate as in real towers (XLA also counts
    elementwise work, which the analytic count leaves out).
    """
    config = wide_config()
    learner, reference = (
        TwoTower(config, key=jax.random.key(0)),
        TwoTower(config, key=jax.random.key(1)),
    )
    step_config = method_preset(
        method, selection=SelectionConfig(filter_ratio=0.5, n_chunks=4), optim=OPTIM
    )
    rng = np.random.default_rng(0)
    batch = SuperBatch(
        images=jnp.asarray(rng.standard_normal((B, 28, 28, 1)), jnp.float32),
        tokens=jnp.asarray(rng.integers(0, V, (B, 16)), jnp.int32),
        index=jnp.arange(B, dtype=jnp.int32),
    )
    state = init_train_state(learner, step_config, jax.random.key(0))
    mesh = mesh_of(1)
    # XLA's cost analysis of the lowered program: the FLOPs as traced, no compile needed.
    lowered = eqx.filter_jit(lambda s, bt, r: train_step(s, bt, r, step_config, mesh)).lower(
        state, batch, reference
    )
    xla = lowered.lowered.cost_analysis()["flops"]
    analytic = step_flops(config, config, step_config, B)
    assert analytic["update"] > 0
    assert (analytic["scoring_reference"] > 0) == (method == "aced")
    print(f"{method}: XLA / analytic = {xla / analytic['total']:.4f}")
    assert abs(xla - analytic["total"]) <= 0.05 * analytic["total"], (xla, analytic)


@pytest.mark.parametrize(
    "selection",
    [
        dict(implementation="dense"),
        dict(implementation="blocked"),
        dict(implementation="dense", scope="local"),
        dict(rule="independent", n_chunks=1),
    ],
    ids=["dense", "blocked", "local", "independent"],
)
def test_selection_in_the_step_is_cacheable_and_non_finite_scores_show_in_its_metrics(
    models, batch, selection
):
    """No host callback in the program that selects (JAX's persistent compilation cache
    never stores one that holds a callback, so every run would compile its step again);
    a non-finite reference embedding instead makes the step's score metrics non-finite,
    on which `aced train` stops (`aced.train.logs.check_finite`)."""
    learner, reference = models
    config = method_preset(
        "acid",
        selection=SelectionConfig(filter_ratio=0.5, **{"n_chunks": 2, **selection}),
        optim=OPTIM,
        reference_embeddings="cached",
    )
    mesh = mesh_of(2)
    zimg = reference.embed_images(batch.images)
    ztxt = reference.embed_texts(batch.tokens)

    @eqx.filter_jit
    def select(zimg):
        cached = dataclasses.replace(batch, reference_zimg=zimg, reference_ztxt=ztxt)
        curated, metrics = curate(jax.random.key(0), learner, reference, cached, config, mesh)
        return curated.indices, metrics

    assert "callback" not in select.lower(zimg).as_text()
    idx, metrics = select(zimg)
    assert len(set(np.asarray(idx).tolist())) == B // 2
    assert all(np.isfinite(float(v)) for v in metrics.values())
    _, metrics = select(zimg.at[3, 0].set(jnp.nan))
    assert not np.isfinite(float(metrics["score/all_mean"]))
