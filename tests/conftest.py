"""Test configuration in the Equinox manner.

Eight simulated CPU devices (set before JAX is imported), strict dtype and rank
promotion, a ``getkey`` fixture and a deterministic hypothesis profile. Runtime
shape checking of the whole ``aced`` package comes from
``--jaxtyping-packages=aced,beartype.beartype`` in ``pyproject.toml``.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import itertools  # noqa: E402

import hypothesis  # noqa: E402
import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

hypothesis.settings.register_profile(
    "aced", derandomize=True, deadline=None, database=None, max_examples=25
)
hypothesis.settings.load_profile("aced")


@pytest.fixture
def getkey():
    """Return a function producing fresh, deterministic PRNG keys."""
    counter = itertools.count()
    base = jax.random.key(0)

    def _getkey():
        return jax.random.fold_in(base, next(counter))

    return _getkey
