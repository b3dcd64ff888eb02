"""Eager checks of a selection's inputs, each error naming the fix."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from aced.kernels.fixed_point import MAX_FIXED_POINT_COUNT


def check_counts(size: int, n_select: int, n_chunks: int, *, chunk_sums: bool = True) -> None:
    """Eager checks of the selection sizes, with the fix in each message; `chunk_sums`: the
    chunks are summed in fixed point (a joint rule), so their size is bounded."""
    if n_chunks < 1:
        raise ValueError(f"{n_chunks=} must be >= 1")
    if n_select < 1:
        raise ValueError(f"{n_select=} must be >= 1")
    if n_select > size:
        raise ValueError(f"{n_select=} must be <= the super-batch size B={size}")
    if n_select % n_chunks:
        raise ValueError(
            f"{n_select=} must be a multiple of {n_chunks=} (each chunk takes "
            f"n_select / n_chunks examples); round n_select to a multiple of n_chunks"
        )
    if chunk_sums and n_select // n_chunks > MAX_FIXED_POINT_COUNT:
        raise ValueError(
            f"chunks of n_select / n_chunks = {n_select // n_chunks} examples exceed "
            f"{MAX_FIXED_POINT_COUNT}, beyond which the fixed-point chunk sums lose more than "
            f"1/16 (aced.kernels.fixed_point); use more chunks: n_chunks >= "
            f"{-(-n_select // MAX_FIXED_POINT_COUNT)}"
        )


def require_finite(x: Array, what: str, enabled: bool = True) -> Array:
    """Reject NaN/Inf: a ValueError on concrete arrays, `eqx.error_if` under tracing.

    `enabled=False` passes `x` through unchecked. Under tracing the check is a host
    callback, and JAX's persistent compilation cache never stores a program that
    holds one: a caller that checks the result another way (aced's train step reports
    non-finite scores in its metrics) turns it off, so that its program is cached."""
    if not enabled:
        return x
    message = f"{what} must be finite; found NaN or Inf"
    if isinstance(x, jax.core.Tracer):
        return eqx.error_if(x, ~jnp.isfinite(x).all(), message)
    # On a concrete array the check runs in NumPy: no XLA program per new shape.
    if not np.isfinite(np.asarray(x)).all():
        raise ValueError(message)
    return x
