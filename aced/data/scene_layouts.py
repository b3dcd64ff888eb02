"""Scene shapes, a split's arrays and random layouts of items on the grid.

A scene places one to several Fashion-MNIST items on a grid (by default 2x2
cells of 28x28 pixels: 56x56 grey images). This file holds its shape
(`SceneConfig`), the arrays of a split (`SceneSplit`, whose quality codes are
`QUALITY_NAMES`), the random layouts (`sample_layouts`: which class sits in
which cell) and the pool image drawn for each item (`pick_sources`).
`aced.data.scene_render` paints them; `aced.data.scenes` makes the splits.

Axis letters beyond `aced.types`: ``G`` grid cells (rows * cols), ``m`` pool
images.
"""

import dataclasses

import numpy as np
from beartype import beartype as typechecker
from jaxtyping import Int, Int8, UInt8, jaxtyped

from aced.data.fashion_mnist import IMAGE_SIZE, NUM_CLASSES

QUALITY_NAMES = ("clean", "mismatched", "partial", "corrupted", "duplicate")
QUALITY = {name: code for code, name in enumerate(QUALITY_NAMES)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SceneConfig:
    """Shape of the built-in scenes.

    **Fields:**

    - `rows`, `cols`: grid shape, each in 1..3 (the caption words cover that).
    - `cell`: side of one cell in pixels; items are resized from 28x28 by
      nearest neighbour when it differs.
    - `min_items`, `max_items`: items per scene, drawn uniformly in that range.
    - `repeat_prob`: chance that an item copies the class of the scene's first
      item, so that captions like "two bags" are common.
    """

    rows: int = 2
    cols: int = 2
    cell: int = IMAGE_SIZE
    min_items: int = 1
    max_items: int = 4
    repeat_prob: float = 0.3

    def __post_init__(self):
        if not (1 <= self.rows <= 3 and 1 <= self.cols <= 3):
            raise ValueError(f"grid {self.rows}x{self.cols}: rows and cols must be in 1..3")
        if self.cell < 1:
            raise ValueError(f"cell={self.cell} must be a positive number of pixels")
        if not 1 <= self.min_items <= self.max_items <= self.cells:
            raise ValueError(
                f"min_items={self.min_items}, max_items={self.max_items} must satisfy "
                f"1 <= min_items <= max_items <= rows * cols = {self.cells}"
            )
        if not 0.0 <= self.repeat_prob <= 1.0:
            raise ValueError(f"repeat_prob={self.repeat_prob} must be in [0, 1]")

    @property
    def cells(self) -> int:
        return self.rows * self.cols

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of a scene in pixels."""
        return self.rows * self.cell, self.cols * self.cell

    @property
    def max_caption_tokens(self) -> int:
        """Upper bound on a caption's word-level tokens, end-of-text included.

        The longest captions are positional: a 3-word prefix, 8 tokens per item
        ("a pair of trousers in the bottom right", "a t - shirt in the top
        left"), one separator between items, and the end-of-text token.
        """
        return 3 + 8 * self.max_items + (self.max_items - 1) + 1


@jaxtyped(typechecker=typechecker)
@dataclasses.dataclass(frozen=True)
class SceneSplit:
    """A split of built-in scenes.

    **Fields:**

    - `images`: uint8 (n, H, W) grey scenes.
    - `captions`: n captions.
    - `layouts`: int8 (n, G) class of the item in each cell (row-major), -1
      when empty; the truth about the image (not always about the caption).
    - `quality`: int8 (n,) codes of `QUALITY_NAMES`; diagnostics only.
    """

    images: UInt8[np.ndarray, "n H W"]
    captions: tuple[str, ...]
    layouts: Int8[np.ndarray, "n G"]
    quality: Int8[np.ndarray, " n"]

    def __post_init__(self):
        if len(self.captions) != self.images.shape[0]:
            raise ValueError(f"{len(self.captions)} captions for {self.images.shape[0]} images")

    def __len__(self) -> int:
        return self.images.shape[0]


@jaxtyped(typechecker=typechecker)
def sample_layouts(
    rng: np.random.Generator,
    n: int,
    config: SceneConfig,
    *,
    min_items: int | None = None,
    max_items: int | None = None,
) -> Int8[np.ndarray, "n G"]:
    """Random layouts: distinct cells, uniform item counts and classes.

    **Arguments:**

    - `rng`: random source; `n`: number of layouts; `config`: grid and counts.
    - `min_items`, `max_items`: override the config's range.

    **Returns:** int8 (n, G), class per cell or -1.
    """
    lo = config.min_items if min_items is None else min_items
    hi = config.max_items if max_items is None else max_items
    if not 1 <= lo <= hi <= config.cells:
        raise ValueError(f"items in [{lo}, {hi}] must lie in [1, {config.cells}]")
    counts = rng.integers(lo, hi + 1, size=n)
    # Rank of each cell in a random order per scene: the k lowest are occupied.
    ranks = np.argsort(np.argsort(rng.random((n, config.cells)), axis=1), axis=1)
    occupied = ranks < counts[:, None]
    classes = rng.integers(0, NUM_CLASSES, size=(n, config.cells))
    first = np.take_along_axis(classes, np.argmin(ranks, axis=1)[:, None], axis=1)  # (n, 1)
    repeat = rng.random((n, config.cells)) < config.repeat_prob
    classes = np.where(repeat, first, classes)
    return np.where(occupied, classes, -1).astype(np.int8)


@jaxtyped(typechecker=typechecker)
def pick_sources(
    rng: np.random.Generator, layouts: Int8[np.ndarray, "n G"], labels: UInt8[np.ndarray, " m"]
) -> Int[np.ndarray, "n G"]:
    """For each item a random pool image of its class (-1 for empty cells).

    **Arguments:**

    - `rng`: random source; `layouts`: (n, G) classes; `labels`: (m,) pool labels.

    **Returns:** int64 (n, G) indices into the pool.
    """
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    used = np.unique(layouts[layouts >= 0])
    if used.size and np.any(counts[used] == 0):
        missing = [int(c) for c in used if counts[c] == 0]
        raise ValueError(f"the image pool has no example of class(es) {missing}")
    by_class = np.argsort(labels, kind="stable")
    starts = np.concatenate([np.zeros(1, np.int64), np.cumsum(counts)[:-1]])
    cls = np.maximum(layouts.astype(np.int64), 0)
    offset = np.floor(rng.random(layouts.shape) * counts[cls]).astype(np.int64)
    return np.where(layouts >= 0, by_class[np.minimum(starts[cls] + offset, labels.size - 1)], -1)
