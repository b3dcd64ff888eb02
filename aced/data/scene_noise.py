"""Web noise: spoil fractions of a clean split of scenes as web data is spoiled.

`WebNoise` gives the fraction of each kind of damage; `add_web_noise` applies
them to disjoint sets of examples: a mismatched caption (another scene's), a
partly wrong caption (one item's class changed), a corrupted image (blank,
noise or scrambled pixels) or a near-duplicate of another example (shifted,
jittered copy, new caption). Each damaged example gets its code of
`QUALITY_NAMES`.
"""

import dataclasses

import numpy as np
from beartype import beartype as typechecker
from jaxtyping import jaxtyped

from aced.data.captions import describe_all
from aced.data.fashion_mnist import NUM_CLASSES
from aced.data.scene_layouts import QUALITY, QUALITY_NAMES, SceneConfig, SceneSplit

# Families whose captions name every item's class, so that changing a class
# (partial) or borrowing another layout's caption (mismatched) makes them wrong.
NAMING_FAMILIES = ("list", "position", "relation")


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
