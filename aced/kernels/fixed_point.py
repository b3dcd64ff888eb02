"""Order-free sums: scores split into int32 integer and fixed-point fraction parts.

XLA rounds float sums in an order that depends on shapes, tiling and backend,
so two programs that sum the same scores differently can disagree in the last
bit and break a tie in the selection differently. Summing
``hi + lo * 2**-frac_bits`` in int32 is exact, so the dense path, the blocked
kernel and any device layout give the same sums bit for bit.

**Error bound.** For ``count <= MAX_FIXED_POINT_COUNT`` terms, each of
magnitude at most ``2**fixed_point_bits(count)`` (at least 2**17: larger values
are clipped), `fixed_point_sum` differs from the exact sum by at most

    e + 2**-22 * (sum(|v_i|) + e),   e = count * 2**-frac_bits,

e from truncating each value to its fixed-point step, the rest from rounding
the exact int32 sums back to f32. At the largest count allowed
the first term is 1/16; the selection refuses larger chunks
(`aced.selection.checks.check_counts`). The bound is the same for scores of one
sign (``easy_reference``, ``hard_learner``) as for mixed ones.
"""

import jax.numpy as jnp
from jaxtyping import Array, Float, Int

# The most terms one fixed-point sum may have: its truncation error is then at most 1/16.
MAX_FIXED_POINT_COUNT = 8192


def fixed_point_bits(count: int) -> int:
    """Fraction bits that keep int32 sums of `count` split scores exact."""
    return 31 - max(count, 1).bit_length()


def fixed_point_error_bound(count: int, abs_sum: float) -> float:
    """The bound of the module docstring on ``|fixed_point_sum - exact sum|`` of `count`
    terms whose magnitudes sum to `abs_sum`."""
    truncation = count * 2.0 ** -fixed_point_bits(count)
    return truncation + 2.0**-22 * (abs_sum + truncation)


def fixed_point_split(
    values: Float[Array, "m n"], frac_bits: int
) -> tuple[Int[Array, "m n"], Int[Array, "m n"]]:
    """Split ``values ~= hi + lo * 2**-frac_bits`` with ``|lo| < 2**frac_bits``.

    Both parts are truncated toward zero, so the split loses less than
    ``2**-frac_bits`` per value and every step is exact in f32 (the integer
    part and the fraction of a float are floats). Values are clipped to
    ``±2**frac_bits`` so that sums of fewer than ``2**(31 - frac_bits)`` terms
    stay inside int32.
    """
    scale = float(2**frac_bits)
    clipped = jnp.clip(values, -scale, scale)
    hi = clipped.astype(jnp.int32)  # conversion truncates toward zero
    lo = ((clipped - hi.astype(jnp.float32)) * scale).astype(jnp.int32)
    return hi, lo


def fixed_point_value(
    hi: Int[Array, " m"], lo: Int[Array, " m"], frac_bits: int
) -> Float[Array, " m"]:
    """Back to f32 from summed `fixed_point_split` parts."""
    return hi.astype(jnp.float32) + lo.astype(jnp.float32) * float(2.0**-frac_bits)


def fixed_point_sum(values: Float[Array, "m n"], frac_bits: int) -> Float[Array, " m"]:
    """Row sums of `values`, exact up to the fixed-point rounding, in any order."""
    hi, lo = fixed_point_split(values, frac_bits)
    return fixed_point_value(hi.sum(axis=1), lo.sum(axis=1), frac_bits)
