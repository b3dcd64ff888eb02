"""Position embeddings of a ViT's patch grid: fixed 2-D sin-cos ones, and learned
ones resampled to another grid (FlexiViT)."""

import jax
import jax.numpy as jnp
from beartype import beartype as typechecker
from jaxtyping import Array, Float, jaxtyped


@jaxtyped(typechecker=typechecker)
def posemb_sincos_2d(
    height: int, width: int, dim: int, temperature: float = 10_000.0
) -> Float[Array, "P D"]:
    """Fixed 2-D sin-cos position embeddings (MoCo v3; big_vision ``posemb_sincos_2d``).

    **Arguments:**

    - `height`, `width`: the patch grid.
    - `dim`: embedding width, divisible by 4 and at least 8.
    - `temperature`: the frequency base.

    **Returns:** (height * width, dim), rows in row-major grid order, columns
    ``[sin(x w), cos(x w), sin(y w), cos(y w)]`` with ``w_k = temperature **
    (-k / (dim/4 - 1))`` and (y, x) the patch row and column.
    """
    if dim % 4 or dim < 8:
        raise ValueError(f"dim={dim} must be divisible by 4 and >= 8 for sincos posemb")
    quarter = dim // 4
    y, x = jnp.mgrid[:height, :width]
    omega = 1.0 / (temperature ** (jnp.arange(quarter, dtype=jnp.float32) / (quarter - 1)))
    # (P, 1) * (1, dim/4) -> (P, dim/4)
    y = y.reshape(-1, 1).astype(jnp.float32) * omega[None, :]
    x = x.reshape(-1, 1).astype(jnp.float32) * omega[None, :]
    return jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], axis=1)


@jaxtyped(typechecker=typechecker)
def resample_posemb(posemb: Float[Array, "P W"], grid: int) -> Float[Array, "Q W"]:
    """Learned position embeddings of a square patch grid, resampled bilinearly to
    ``grid x grid`` (FlexiViT; big_vision ``resample_posemb``). The same grid is returned as is.
    """
    old = round(posemb.shape[0] ** 0.5)
    if old * old != posemb.shape[0]:
        raise ValueError(f"{posemb.shape[0]} position embeddings do not form a square grid")
    if grid == old:
        return posemb
    square = posemb.reshape(old, old, posemb.shape[1])
    return jax.image.resize(square, (grid, grid, posemb.shape[1]), "linear").reshape(
        grid * grid, posemb.shape[1]
    )
