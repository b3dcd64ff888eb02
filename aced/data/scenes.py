"""Built-in captioned scenes made of Fashion-MNIST photographs: the splits.

A scene places one to several Fashion-MNIST items on a grid (see
`aced.data.scene_layouts`) and is captioned by `aced.data.captions` with its
items, their positions and counts. This file makes clean scenes
(`make_scenes`) and the three splits:

- **curated**: clean captions; trains reference models. Drawn from one sixth
  of the training images (indices divisible by 6).
- **web**: larger and noisy like web data, from the other five sixths of the
  training images, spoiled by `aced.data.scene_noise` (`WebNoise`).
- **eval**: clean, from the Fashion-MNIST *test* images only.

Each example carries a quality code (`QUALITY_NAMES`) for diagnostics;
training must not read it. Everything is deterministic from a seed, built in
memory with vectorised numpy (a few thousand scenes in well under a second)
and cached nowhere on disk.

The names of the files it builds on (layouts, rendering, web noise) are
importable from here too.

Axis letters beyond `aced.types`: ``m`` pool images.
"""

import os

import numpy as np
from beartype import beartype as typechecker
from jaxtyping import UInt8, jaxtyped

from aced.data.captions import FAMILIES, describe_all
from aced.data.fashion_mnist import load_fashion_mnist
from aced.data.scene_layouts import (
    QUALITY,
    QUALITY_NAMES,
    SceneConfig,
    SceneSplit,
    pick_sources,
    sample_layouts,
)
from aced.data.scene_noise import NAMING_FAMILIES, WebNoise, add_web_noise
from aced.data.scene_render import render

CURATED_POOL_EVERY = 6  # training images with index % 6 == 0 form the curated pool
_SPLIT_STREAM = {"curated": 1, "web": 2, "eval": 3}


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


__all__ = [
    "CURATED_POOL_EVERY",
    "NAMING_FAMILIES",
    "QUALITY",
    "QUALITY_NAMES",
    "SceneConfig",
    "SceneSplit",
    "WebNoise",
    "add_web_noise",
    "curated_split",
    "eval_split",
    "make_scenes",
    "pick_sources",
    "render",
    "sample_layouts",
    "web_split",
]
