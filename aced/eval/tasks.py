"""The evaluation suite: its types and its assembly from held-out scenes.

All images come from the Fashion-MNIST *test* images, placed on the same grid
as the training scenes. `build_suite` runs each zero-shot task builder of
`aced.eval.task_builders` (which also lists the tasks) on its own random
stream, renders the images, and adds a retrieval set. A zero-shot task gives
each image K candidate *prompt sets* (one per class of the task), stored per
image, so that a task may ask about a different position or a different
named item in each image.

Retrieval pairs each of n scenes with a positional caption naming every item
and its cell; captions are unique within the set, so that image i has exactly
one right caption (caption i) and vice versa.

Axis letters beyond `aced.types`: ``K`` candidates per image, ``G`` grid cells.
"""

import dataclasses
import os

import numpy as np
from beartype import beartype as typechecker
from jaxtyping import Int, UInt8, jaxtyped

from aced.data.captions import describe_all, position_names
from aced.data.fashion_mnist import load_fashion_mnist
from aced.data.scene_layouts import SceneConfig, pick_sources, sample_layouts
from aced.data.scene_render import render
from aced.eval.task_builders import TASK_BUILDERS, TASK_NAMES, Prompts

RETRIEVAL_METRICS = ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5")


@jaxtyped(typechecker=typechecker)
@dataclasses.dataclass(frozen=True)
class ZeroShotTask:
    """One zero-shot classification task.

    **Fields:**

    - `name`, `description`: identifier and one line of prose.
    - `images`: uint8 (n, H, W) scenes.
    - `candidates`: (n, K) ids of each image's candidate prompt sets (rows of
      `EvalSuite.prompt_sets`).
    - `labels`: (n,) index in [0, K) of the right candidate.
    - `class_names`: K names of the classes, for reports.
    """

    name: str
    description: str
    images: UInt8[np.ndarray, "n H W"]
    candidates: Int[np.ndarray, "n K"]
    labels: Int[np.ndarray, " n"]
    class_names: tuple[str, ...]

    @property
    def chance(self) -> float:
        """Expected accuracy of a model blind to the image (labels are balanced)."""
        return 1.0 / self.candidates.shape[1]


@jaxtyped(typechecker=typechecker)
@dataclasses.dataclass(frozen=True)
class RetrievalSet:
    """n scenes and their n unique captions; caption i describes image i."""

    images: UInt8[np.ndarray, "n H W"]
    captions: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class EvalSuite:
    """Everything `aced.eval.evaluate` needs, built by `build_suite`.

    **Fields:**

    - `prompt_sets`: tuple of prompt sets, each a tuple of template texts.
    - `prompt_names`: a name per prompt set (``"class:bag"``, ``"count:2"``).
    - `tasks`: the zero-shot tasks; `retrieval`: the retrieval set.
    - `config`: scene shape the images were built with; `channels`: the
      model's input channels; `seed`: construction seed.
    """

    prompt_sets: tuple[tuple[str, ...], ...]
    prompt_names: tuple[str, ...]
    tasks: tuple[ZeroShotTask, ...]
    retrieval: RetrievalSet
    config: SceneConfig
    channels: int
    seed: int

    def chance_levels(self) -> dict[str, float]:
        """Score of a blind model per reported metric (keys as `evaluate`'s)."""
        n = len(self.retrieval.captions)
        levels = {f"zeroshot/{t.name}": t.chance for t in self.tasks}
        levels |= {f"retrieval/{m}": min(1.0, int(m[-1]) / n) for m in RETRIEVAL_METRICS}
        levels["average"] = float(np.mean(list(levels.values())))
        return levels


def _unique_retrieval(pool, labels, n, config, rng) -> RetrievalSet:
    # Positional captions drawn four times over, first occurrences kept.
    layouts = sample_layouts(rng, 4 * n, config)
    captions = describe_all(layouts, config.rows, config.cols, rng, ("position",))
    _, first = np.unique(np.asarray(captions), return_index=True)
    keep = np.sort(first)[:n]
    if keep.size < n:
        raise ValueError(
            f"only {keep.size} distinct captions for retrieval_size={n} with grid "
            f"{config.rows}x{config.cols} and up to {config.max_items} items; lower retrieval_size"
        )
    images = render(pool, pick_sources(rng, layouts[keep], labels), config)
    return RetrievalSet(images, tuple(captions[i] for i in keep))


def build_suite(
    *,
    seed: int = 0,
    config: SceneConfig = SceneConfig(),
    per_task: int = 200,
    retrieval_size: int = 500,
    channels: int = 3,
    data_dir: str | os.PathLike | None = None,
) -> EvalSuite:
    """Build the evaluation suite from the Fashion-MNIST test images.

    **Arguments:**

    - `seed`: construction seed (the same seed gives the same suite).
    - `config`: the scene shape the model was trained on; needs at least two
      columns and ``max_items > min_items`` (for ``count``).
    - `per_task`: images per zero-shot task; `retrieval_size`: image-caption pairs.
    - `channels`: input channels of the models to evaluate.
    - `data_dir`: Fashion-MNIST directory (see `aced.data.fashion_mnist`).

    **Returns:** an `EvalSuite`.
    """
    if config.cols < 2 or config.cells < 3:
        raise ValueError(
            "the suite needs a grid of at least 3 cells and 2 columns, "
            f"not {config.rows}x{config.cols}"
        )
    if config.max_items <= config.min_items:
        raise ValueError(f"count needs max_items={config.max_items} > min_items={config.min_items}")
    if per_task < 1 or retrieval_size < 5:
        raise ValueError(
            f"per_task={per_task} must be >= 1 and retrieval_size={retrieval_size} >= 5"
        )
    pool, labels = load_fashion_mnist("test", data_dir)
    positions = position_names(config.rows, config.cols)
    prompts = Prompts()
    tasks = []
    for stream, name in enumerate(TASK_NAMES):
        builder, description = TASK_BUILDERS[name]
        rng = np.random.default_rng((seed, stream))
        layouts, candidates, task_labels, class_names = builder(
            rng, per_task, config, prompts, positions
        )
        images = render(pool, pick_sources(rng, layouts.astype(np.int8), labels), config)
        tasks.append(
            ZeroShotTask(
                name,
                description,
                images,
                np.asarray(candidates, dtype=np.int64),
                np.asarray(task_labels, dtype=np.int64),
                tuple(class_names),
            )
        )
    retrieval = _unique_retrieval(
        pool, labels, retrieval_size, config, np.random.default_rng((seed, len(TASK_NAMES)))
    )
    return EvalSuite(
        tuple(prompts.sets), tuple(prompts.names), tuple(tasks), retrieval, config, channels, seed
    )


__all__ = [
    "RETRIEVAL_METRICS",
    "TASK_NAMES",
    "EvalSuite",
    "RetrievalSet",
    "ZeroShotTask",
    "build_suite",
]
