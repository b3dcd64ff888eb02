"""Sharded SigLIP losses equal the dense loss and its gradients on 1-8 devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from aced.losses import (
    sharded_sigmoid_loss,
    sigmoid_loss,
    sigmoid_loss_all_gather,
    sigmoid_loss_ring,
)

VARIANTS = ("ring", "all_gather")
ARGNUMS = (0, 1, 2, 3)  # zimg, ztxt, t, b


def mesh_of(k: int) -> Mesh:
    return Mesh(np.array(jax.devices()[:k]), ("data",), axis_types=(AxisType.Auto,))


def unit_rows(key, n: int, d: int):
    z = jax.random.normal(key, (n, d), jnp.float32)
    return z / jnp.linalg.norm(z, axis=1, keepdims=True)


def assert_close(actual, expected, rtol=1e-5):
    """Entry-wise ``rtol``, with an absolute floor of ``rtol`` times the largest
    entry so that near-zero gradient entries compare on the array's scale."""
    expected = np.asarray(expected)
    atol = rtol * float(np.max(np.abs(expected)))
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=atol)


@functools.cache
def dense_value_and_grad():
    return jax.jit(jax.value_and_grad(sigmoid_loss, argnums=ARGNUMS))


@functools.cache
def sharded_value_and_grad(k: int, variant: str):
    def loss(zimg, ztxt, t, b):
        return sharded_sigmoid_loss(zimg, ztxt, t, b, mesh_of(k), "data", variant)

    return jax.jit(jax.value_and_grad(loss, argnums=ARGNUMS))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_loss_and_gradients_match_dense(getkey, k, variant):
    n, d = 16, 8
    zimg, ztxt = unit_rows(getkey(), n, d), unit_rows(getkey(), n, d)
    # t, b where positives and negatives both carry gradient (at SigLIP's
    # init t=10, b=-10 the negatives' gradients nearly vanish).
    t, b = jnp.float32(6.0), jnp.float32(-2.5)
    loss, grads = sharded_value_and_grad(k, variant)(zimg, ztxt, t, b)
    loss_ref, grads_ref = dense_value_and_grad()(zimg, ztxt, t, b)
    assert_close(loss, loss_ref)
    for name, g, g_ref in zip(("zimg", "ztxt", "t", "b"), grads, grads_ref):
        assert g.shape == g_ref.shape, name
        assert_close(g, g_ref)


@pytest.mark.parametrize("local_loss", [sigmoid_loss_ring, sigmoid_loss_all_gather])
def test_called_inside_a_users_shard_map_on_a_2d_mesh(getkey, local_loss):
    # Batch over "data", replicated over "model": the loss must still be the
    # dense one, and the parameter gradients must not be scaled by either axis.
    mesh = Mesh(
        np.array(jax.devices()[:8]).reshape(4, 2),
        ("data", "model"),
        axis_types=(AxisType.Auto, AxisType.Auto),
    )
    batch, replicated = PartitionSpec("data"), PartitionSpec()
    loss = jax.shard_map(
        lambda zi, zt, t, b: local_loss(zi, zt, t, b, "data"),
        mesh=mesh,
        in_specs=(batch, batch, replicated, replicated),
        out_specs=replicated,
    )
    zimg, ztxt = unit_rows(getkey(), 8, 4), unit_rows(getkey(), 8, 4)
    zimg, ztxt = jax.device_put((zimg, ztxt), NamedSharding(mesh, batch))
    t, b = jnp.float32(4.0), jnp.float32(-1.0)
    value, grads = jax.jit(jax.value_and_grad(loss, argnums=ARGNUMS))(zimg, ztxt, t, b)
    value_ref, grads_ref = dense_value_and_grad()(zimg, ztxt, t, b)
    assert_close(value, value_ref)
    for g, g_ref in zip(grads, grads_ref):
        assert_close(g, g_ref)


def test_ring_passes_chunks_and_holds_less_than_all_gather():
    k, n, d = 8, 512, 16
    mesh = mesh_of(k)
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    spec = jax.ShapeDtypeStruct((n, d), jnp.float32, sharding=sharding)

    def compiled(variant):
        loss = functools.partial(sharded_sigmoid_loss, mesh=mesh, variant=variant)
        grad = jax.grad(loss, argnums=(0, 1))
        return jax.jit(grad).lower(spec, spec, jnp.float32(10.0), jnp.float32(-10.0)).compile()

    ring, gather = compiled("ring"), compiled("all_gather")
    ring_hlo = ring.as_text()
    assert "collective-permute" in ring_hlo and "all-gather" not in ring_hlo
    # the all-gather keeps an (n/k, n) logit block alive; the ring one (n/k, n/k).
    ring_bytes = ring.memory_analysis().temp_size_in_bytes
    gather_bytes = gather.memory_analysis().temp_size_in_bytes
    assert ring_bytes < gather_bytes / 2, (ring_bytes, gather_bytes)


def test_rejects_batch_not_divisible_by_axis():
    z = jnp.ones((6, 4), jnp.float32) / 2.0
    with pytest.raises(ValueError, match="divisible by the 4 devices"):
        sharded_sigmoid_loss(z, z, 10.0, -10.0, mesh_of(4))


def test_rejects_unknown_axis():
    z = jnp.ones((8, 4), jnp.float32) / 2.0
    with pytest.raises(ValueError, match="not an axis of the mesh"):
        sharded_sigmoid_loss(z, z, 10.0, -10.0, mesh_of(2), axis_name="batch")
