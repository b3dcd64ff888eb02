"""Mesh and placement: the 1-D data-parallel mesh, replicated and sharded
arrays, both towers' embeddings with each device embedding its shard, and
one-device copies."""

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float, Int

from aced.models import TwoTower
from aced.train.state import SuperBatch

AXIS = "data"


def default_mesh() -> Mesh:
    """A 1-D data-parallel mesh over every device (all processes under jax.distributed)."""
    return Mesh(np.array(jax.devices()), (AXIS,))


def _from_host(x: Array, sharding: NamedSharding) -> Array:
    """`x` placed with `sharding`, built from its host value.

    Works whatever devices `x` is on now, and under jax.distributed, where the
    mesh spans devices this process cannot address (every process passes the
    same value). PRNG keys travel as their key data.
    """
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = _from_host(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(tree, mesh: Mesh):
    """Place every array of `tree` on all devices of `mesh` (states, models).

    Inputs must already live on the mesh for the step to trace once: jit keys
    its trace on each input's sharding, and the step's outputs are on the mesh.
    """
    sharding = NamedSharding(mesh, P())
    arrays, static = eqx.partition(tree, eqx.is_array)
    return eqx.combine(jax.tree.map(lambda x: _from_host(x, sharding), arrays), static)


def shard_batch(batch: SuperBatch, mesh: Mesh) -> SuperBatch:
    """Split every array of the super-batch along its first axis over ``data``."""
    arrays, static = eqx.partition(batch, eqx.is_array)
    return eqx.combine(jax.device_put(arrays, NamedSharding(mesh, P(AXIS))), static)


def embed_sharded(
    model: TwoTower,
    images: Float[Array, "n H W C"],
    tokens: Int[Array, "n L"],
    mesh: Mesh,
    *,
    batch_size: int | None = None,
    flexi: bool = False,
) -> tuple[Float[Array, "n D"], Float[Array, "n D"]]:
    """Both towers' embeddings, each device embedding its shard of the batch
    `batch_size` examples at a time (None: the towers' default); `flexi`: as
    in `TwoTower.embed_images`."""
    params, static = eqx.partition(model, eqx.is_array)

    def local(params, images, tokens):
        m = eqx.combine(params, static)
        return (
            m.embed_images(images, batch_size=batch_size, flexi=flexi),
            m.embed_texts(tokens, batch_size=batch_size),
        )

    return jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS)), out_specs=(P(AXIS), P(AXIS))
    )(params, images, tokens)


def on_one_device(tree):
    """Every array of `tree` on this process's first device (to evaluate or export a
    replicated model; under jax.distributed each process takes its own copy)."""
    arrays, static = eqx.partition(tree, eqx.is_array)

    def local(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            x = x.addressable_data(0)  # replicated: every device holds the whole array
        return jax.device_put(x, jax.local_devices()[0])

    return eqx.combine(jax.tree.map(local, arrays), static)
