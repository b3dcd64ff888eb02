"""Built-in captioned scenes made of Fashion-MNIST photographs.

A scene places one to several Fashion-MNIST items on a grid (by default 2x2
cells of 28x28 pixels: 56x56 grey images) and is captioned by
`aced.data.captions` with its items, their positions and counts. Three splits:

- **curated**: clean captions; trains reference models. Drawn from one sixth
  of the training images (indices divisible by 6).
- **web**: larger and noisy like web data, from the other five sixths of the
  training images: a fraction of its examples (`WebNoise`) carry a mismatched
  caption (another scene's), a partly wrong caption (one item's class
  changed), a corrupted image (blank, noise or scrambled pixels) or are a
  near-duplicate of another example (shifted, jittered copy, new caption).
- **eval**: clean, from the Fashion-MNIST *test* images only.

Each example carries a quality code (`QUALITY_NAMES`) for diagnostics;
training must not read it. Everything is deterministic from a seed, built in
memory with vectorised numpy (a few thousand scenes in well under a second)
and cached nowhere on disk.

Axis letters beyond `aced.types`: ``G`` grid cells (rows * cols), ``m`` pool
images.
"""

import dataclasses
import os

import numpy as np
from beartype import beartype as typechecker
from jaxtyping import Int, Int8, UInt8, jaxtyped

from aced.data.captions import FAMILIES, describe_all
from aced.data.fashion_mnist import IMAGE_SIZE, NUM_CLASSES, load_fashion_mnist

QUALITY_NAMES = ("clean", "mismatched", "partial", "corrupted", "duplicate")
QUALITY = {name: code for code, name in enumerate(QUALITY_NAMES)}
CURATED_POOL_EVERY = 6  # training images with index % 6 == 0 form the curated pool
# Families whose captions name every item's class, so that changing a class
# (partial) or borrowing another layout's caption (mismatched) makes them wrong.
NAMING_FAMILIES = ("list", "position", "relation")
_SPLIT_STREAM = {"curated": 1, "web": 2, "eval": 3}


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class WebNoise:
    """Fractions of the web split's examples spoiled in each way (sum < 1)."""

    mismatched: float = 0.2
    partial: float = 0.1
    corrupted: float = 0.05
    duplicate: float = 0.1

    def __post_init__(self):
        for name, value in self.fractions().items():
            if not 0.0 <= value < 1.0:
                raise ValueError(f"WebNoise.{name}={value} must be in [0, 1)")
        if sum(self.fractions().values()) >= 1.0:
            raise ValueError(f"WebNoise fractions {self.fractions()} must sum to less than 1")

    def fractions(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in QUALITY_NAMES[1:]}


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


@jaxtyped(typechecker=typechecker)
def make_scenes(
    pool: UInt8[np.ndarray, "m h w"],
    labels: UInt8[np.ndarray, " m"],
    n: int,
    config: SceneConfig,
    rng: np.random.Generator,
    families: tuple[str, ...] = FAMILIES,
) -> SceneSplit:
    """n clean scenes drawn from an image pool, captioned.

    **Arguments:**

    - `pool`, `labels`: item images (m, h, w) and their classes (m,).
    - `n`: number of scenes (positive); `config`: scene shape.
    - `rng`: random source; `families`: caption families allowed.

    **Returns:** a `SceneSplit` with every quality code ``clean``.
    """
    if n < 1:
        raise ValueError(f"n={n} scenes requested; ask for at least one")
    if labels.size == 0:
        raise ValueError("the image pool is empty; the Fashion-MNIST files hold no examples")
    layouts = sample_layouts(rng, n, config)
    images = render(pool, pick_sources(rng, layouts, labels), config)
    captions = describe_all(layouts, config.rows, config.cols, rng, families)
    return SceneSplit(images, tuple(captions), layouts, np.zeros(n, dtype=np.int8))


def _other_layout(layouts: np.ndarray, i: int, j: int) -> int:
    # The next index after j whose class multiset differs from scene i's, so a
    # borrowed caption cannot be right by chance; j itself when none differs.
    mine = np.sort(layouts[i])
    for step in range(layouts.shape[0]):
        k = (j + step) % layouts.shape[0]
        if not np.array_equal(np.sort(layouts[k]), mine):
            return k
    return j


def _corrupt(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # One of three corruptions per image: blank (a constant), uniform noise,
    # or the image's own pixels scrambled (same histogram, no structure).
    m, h, w = images.shape
    kind = rng.integers(0, 3, size=m)
    out = images.copy()
    blank, noise, scramble = (np.flatnonzero(kind == k) for k in range(3))
    out[blank] = rng.integers(0, 256, size=(blank.size, 1, 1), dtype=np.uint8)
    out[noise] = rng.integers(0, 256, size=(noise.size, h, w), dtype=np.uint8)
    flat = images[scramble].reshape(scramble.size, h * w)
    order = np.argsort(rng.random((scramble.size, h * w)), axis=1)
    out[scramble] = np.take_along_axis(flat, order, axis=1).reshape(scramble.size, h, w)
    return out


def _near_duplicates(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # A one-pixel shift and small brightness noise: close, not identical.
    shifts = rng.integers(-1, 2, size=(images.shape[0], 2))
    moved = np.stack([np.roll(im, tuple(s), axis=(0, 1)) for im, s in zip(images, shifts)])
    jitter = rng.integers(-8, 9, size=images.shape, dtype=np.int16)
    return np.clip(moved.astype(np.int16) + jitter, 0, 255).astype(np.uint8)


@jaxtyped(typechecker=typechecker)
def add_web_noise(
    split: SceneSplit, noise: WebNoise, config: SceneConfig, rng: np.random.Generator
) -> SceneSplit:
    """Spoil disjoint fractions of a clean split as web data is spoiled.

    **Arguments:**

    - `split`: clean scenes; `noise`: fraction of each kind of damage;
      `config`: grid shape (for new captions); `rng`: random source.

    **Returns:** a split of the same size with damaged examples and their
    quality codes; `layouts` stays the truth about each image.
    """
    n = len(split)
    images, layouts = split.images.copy(), split.layouts.copy()
    captions, quality = list(split.captions), np.zeros(n, dtype=np.int8)
    order = rng.permutation(n)
    start, chosen = 0, {}
    for name, fraction in noise.fractions().items():
        count = int(fraction * n)
        chosen[name] = np.sort(order[start : start + count])
        quality[chosen[name]] = QUALITY[name]
        start += count
    clean = order[start:]

    idx = chosen["mismatched"]
    if idx.size:
        partner = [
            _other_layout(layouts, int(i), int(i + j) % n)
            for i, j in zip(idx, rng.integers(1, n, size=idx.size))
        ]
        borrowed = describe_all(layouts[partner], config.rows, config.cols, rng, NAMING_FAMILIES)
        for i, text in zip(idx, borrowed):
            captions[i] = text

    idx = chosen["partial"]
    if idx.size:
        wrong = layouts[idx].copy()
        occupied = wrong >= 0
        # One occupied cell per scene, drawn uniformly, gets another class.
        pick = np.argmax(np.where(occupied, rng.random(wrong.shape), -1.0), axis=1)
        old = wrong[np.arange(idx.size), pick].astype(np.int64)
        wrong[np.arange(idx.size), pick] = (
            old + rng.integers(1, NUM_CLASSES, size=idx.size)
        ) % NUM_CLASSES
        for i, text in zip(
            idx, describe_all(wrong, config.rows, config.cols, rng, NAMING_FAMILIES)
        ):
            captions[i] = text

    idx = chosen["corrupted"]
    if idx.size:
        images[idx] = _corrupt(images[idx], rng)

    idx = chosen["duplicate"]
    if idx.size:
        if clean.size == 0:
            raise ValueError("WebNoise leaves no clean example to duplicate; lower its fractions")
        source = clean[rng.integers(0, clean.size, size=idx.size)]
        images[idx] = _near_duplicates(images[source], rng)
        layouts[idx] = layouts[source]
        for i, text in zip(idx, describe_all(layouts[source], config.rows, config.cols, rng)):
            captions[i] = text
    return SceneSplit(images, tuple(captions), layouts, quality)


def _pools(split: str, data_dir: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_fashion_mnist("test" if split == "eval" else "train", data_dir)
    if split == "eval":
        return images, labels
    keep = (np.arange(labels.size) % CURATED_POOL_EVERY == 0) == (split == "curated")
    return images[keep], labels[keep]


def curated_split(
    n: int,
    *,
    seed: int = 0,
    config: SceneConfig = SceneConfig(),
    data_dir: str | os.PathLike | None = None,
) -> SceneSplit:
    """n clean scenes from the curated pool of training images.

    **Arguments:**

    - `n`: number of scenes; `seed`: random seed; `config`: scene shape.
    - `data_dir`: Fashion-MNIST directory (see `aced.data.fashion_mnist`).

    **Returns:** a `SceneSplit`, all ``clean``.
    """
    pool, labels = _pools("curated", data_dir)
    return make_scenes(
        pool, labels, n, config, np.random.default_rng((seed, _SPLIT_STREAM["curated"]))
    )


def web_split(
    n: int,
    *,
    seed: int = 0,
    config: SceneConfig = SceneConfig(),
    noise: WebNoise = WebNoise(),
    data_dir: str | os.PathLike | None = None,
) -> SceneSplit:
    """n noisy web-like scenes from the web pool of training images.

    **Arguments:**

    - `n`: number of scenes; `seed`: random seed; `config`: scene shape.
    - `noise`: fractions of mismatched, partial, corrupted and duplicate examples.
    - `data_dir`: Fashion-MNIST directory.

    **Returns:** a `SceneSplit` whose `quality` tags each example.
    """
    pool, labels = _pools("web", data_dir)
    rng = np.random.default_rng((seed, _SPLIT_STREAM["web"]))
    return add_web_noise(make_scenes(pool, labels, n, config, rng), noise, config, rng)


def eval_split(
    n: int,
    *,
    seed: int = 0,
    config: SceneConfig = SceneConfig(),
    data_dir: str | os.PathLike | None = None,
) -> SceneSplit:
    """n clean scenes from the Fashion-MNIST test images only.

    **Arguments:** as `curated_split`.

    **Returns:** a `SceneSplit`, all ``clean``.
    """
    pool, labels = _pools("eval", data_dir)
    return make_scenes(
        pool, labels, n, config, np.random.default_rng((seed, _SPLIT_STREAM["eval"]))
    )
