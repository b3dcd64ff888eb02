"""Rendering: paint each item's pool image into its grid cell of a scene.

Axis letters beyond `aced.types`: ``G`` grid cells (rows * cols), ``m`` pool
images.
"""

import numpy as np
from beartype import beartype as typechecker
from jaxtyping import Int, UInt8, jaxtyped

from aced.data.scene_layouts import SceneConfig


@jaxtyped(typechecker=typechecker)
def render(
    pool: UInt8[np.ndarray, "m h w"], sources: Int[np.ndarray, "n G"], config: SceneConfig
) -> UInt8[np.ndarray, "n H W"]:
    """Paint each scene's items into its grid cells (black background).

    **Arguments:**

    - `pool`: (m, h, w) item images; `sources`: (n, G) pool index per cell, -1
      for empty; `config`: grid shape and cell size.

    **Returns:** uint8 (n, rows * cell, cols * cell).
    """
    n, cell = sources.shape[0], config.cell
    if sources.shape[1] != config.cells:
        raise ValueError(f"sources have {sources.shape[1]} cells, the grid {config.cells}")
    # Nearest-neighbour resampling indices from the pool's size to the cell's.
    ys = (np.arange(cell) * pool.shape[1]) // cell
    xs = (np.arange(cell) * pool.shape[2]) // cell
    out = np.zeros((n, *config.image_size), dtype=np.uint8)
    for g in range(config.cells):
        r, c = divmod(g, config.cols)
        full = np.flatnonzero(sources[:, g] >= 0)
        items = pool[sources[full, g]]  # (k, h, w)
        if items.shape[1:] != (cell, cell):
            items = items[:, ys[:, None], xs[None, :]]  # (k, cell, cell)
        out[full, r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = items
    return out
