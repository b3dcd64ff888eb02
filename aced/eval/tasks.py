"""The evaluation suite: zero-shot tasks and a retrieval set on held-out scenes.

All images come from the Fashion-MNIST *test* images, placed on the same grid
as the training scenes. A zero-shot task gives each image K candidate
*prompt sets* (one per class of the task); a prompt set is several templates
whose text embeddings are averaged (CLIP's prompt ensembling). Candidates are
stored per image, so that a task may ask about a different position or a
different named item in each image. Labels are balanced over the K classes,
so any model blind to the image scores 1/K in expectation.

| task | image | classes (K) |
|---|---|---|
| ``classify`` | one item | its class (10) |
| ``classify_at_position`` | 2 to min(4, max_items) items | class in a queried cell (10) |
| ``count`` | min_items..max_items items | their number |
| ``locate`` | two items of different classes | cell of the named one (G) |
| ``presence`` | three items (two if max_items is 2) | which of two classes is present (2) |
| ``coarse`` | one item | upper body garment / lower body garment / shoe (3) |
| ``same_kind`` | two items | same class or different (2) |
| ``left_item`` | two items side by side | class of the left one (10) |

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

from aced.data.captions import (
    COARSE_NAMES,
    COARSE_OF_CLASS,
    DIFFERENT,
    SAME_KIND,
    class_phrase,
    coarse_phrase,
    count_phrase,
    describe_all,
    position_names,
)
from aced.data.fashion_mnist import CLASS_NAMES, NUM_CLASSES, load_fashion_mnist
from aced.data.scenes import SceneConfig, pick_sources, render, sample_layouts

TASK_NAMES = (
    "classify",
    "classify_at_position",
    "count",
    "locate",
    "presence",
    "coarse",
    "same_kind",
    "left_item",
)
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


class _Prompts:
    """Prompt sets registered by name, each once."""

    def __init__(self):
        self.names: list[str] = []
        self.sets: list[tuple[str, ...]] = []

    def add(self, name: str, texts: tuple[str, ...]) -> int:
        if name not in self.names:
            self.names.append(name)
            self.sets.append(texts)
        return self.names.index(name)

    def of_class(self, c: int) -> int:
        a = class_phrase(c)
        return self.add(f"class:{CLASS_NAMES[c]}", (a, f"a photo of {a}", f"a picture of {a}"))

    def at(self, c: int, g: int, positions: tuple[str, ...]) -> int:
        t = f"{class_phrase(c)} in the {positions[g]}"
        return self.add(
            f"at:{CLASS_NAMES[c]}:{positions[g]}", (t, f"a photo with {t}", f"an image with {t}")
        )

    def count(self, k: int) -> int:
        t = count_phrase(k)
        return self.add(f"count:{k}", (t, f"a photo of {t}", f"an image with {t}"))

    def coarse(self, kind: int) -> int:
        t = coarse_phrase(kind)
        return self.add(f"coarse:{COARSE_NAMES[kind]}", (t, f"a photo of {t}", f"a picture of {t}"))

    def kind(self, same: bool) -> int:
        t = f"two items {SAME_KIND}" if same else f"two {DIFFERENT} items"
        return self.add(
            "same_kind" if same else "different_kinds", (t, f"a photo of {t}", f"an image with {t}")
        )

    def left(self, c: int) -> int:
        t = f"{class_phrase(c)} on the left"
        return self.add(f"left:{CLASS_NAMES[c]}", (t, f"a photo of {t}"))


def _balanced(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % k)


def _place(rng: np.random.Generator, n: int, config: SceneConfig, counts: np.ndarray) -> np.ndarray:
    # Random distinct cells, counts[i] of them, for classes filled in later: (n, G) bool.
    ranks = np.argsort(np.argsort(rng.random((n, config.cells)), axis=1), axis=1)
    return ranks < counts[:, None]


def _other_class(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    # A class differing from avoid[i] for every i, uniform over the other nine.
    return (avoid + rng.integers(1, NUM_CLASSES, size=avoid.shape)) % NUM_CLASSES


def _task_classify(rng, n, config, prompts, positions):
    labels = _balanced(rng, n, NUM_CLASSES)
    layouts = np.full((n, config.cells), -1)
    layouts[np.arange(n), rng.integers(0, config.cells, size=n)] = labels
    candidates = np.tile([prompts.of_class(c) for c in range(NUM_CLASSES)], (n, 1))
    return layouts, candidates, labels, CLASS_NAMES


def _task_classify_at_position(rng, n, config, prompts, positions):
    labels = _balanced(rng, n, NUM_CLASSES)
    layouts = sample_layouts(
        rng, n, config, min_items=2, max_items=min(4, config.max_items)
    ).astype(np.int64)
    # The queried cell: a random occupied one, which gets the label's class.
    query = np.argmax(np.where(layouts >= 0, rng.random(layouts.shape), -1.0), axis=1)
    layouts[np.arange(n), query] = labels
    candidates = np.array(
        [[prompts.at(c, int(q), positions) for c in range(NUM_CLASSES)] for q in query]
    )
    return layouts, candidates, labels, CLASS_NAMES


def _task_count(rng, n, config, prompts, positions):
    counts = np.arange(config.min_items, config.max_items + 1)
    labels = _balanced(rng, n, counts.size)
    occupied = _place(rng, n, config, counts[labels])
    layouts = np.where(occupied, rng.integers(0, NUM_CLASSES, size=occupied.shape), -1)
    candidates = np.tile([prompts.count(int(k)) for k in counts], (n, 1))
    return layouts, candidates, labels, tuple(count_phrase(int(k)) for k in counts)


def _task_locate(rng, n, config, prompts, positions):
    labels = _balanced(rng, n, config.cells)  # cell of the named item
    named = rng.integers(0, NUM_CLASSES, size=n)
    other_cell = (labels + rng.integers(1, config.cells, size=n)) % config.cells
    layouts = np.full((n, config.cells), -1)
    layouts[np.arange(n), labels] = named
    layouts[np.arange(n), other_cell] = _other_class(rng, named)
    candidates = np.array(
        [[prompts.at(int(c), g, positions) for g in range(config.cells)] for c in named]
    )
    return layouts, candidates, labels, positions


def _task_presence(rng, n, config, prompts, positions):
    labels = _balanced(rng, n, 2)  # position of the present class among the two candidates
    k = min(3, config.max_items)
    occupied = _place(rng, n, config, np.full(n, k))
    layouts = np.where(occupied, rng.integers(0, NUM_CLASSES, size=occupied.shape), -1)
    present = np.array([rng.choice(row[row >= 0]) for row in layouts])
    absent = np.array([rng.choice(np.setdiff1d(np.arange(NUM_CLASSES), row)) for row in layouts])
    pair = np.where(
        labels[:, None] == 0, np.stack([present, absent], 1), np.stack([absent, present], 1)
    )
    candidates = np.array([[prompts.of_class(int(c)) for c in row] for row in pair])
    return layouts, candidates, labels, ("first", "second")


def _task_coarse(rng, n, config, prompts, positions):
    labels = _balanced(rng, n, len(COARSE_NAMES))
    members = [np.flatnonzero(np.asarray(COARSE_OF_CLASS) == g) for g in range(len(COARSE_NAMES))]
    classes = np.array([rng.choice(members[g]) for g in labels])
    layouts = np.full((n, config.cells), -1)
    layouts[np.arange(n), rng.integers(0, config.cells, size=n)] = classes
    candidates = np.tile([prompts.coarse(g) for g in range(len(COARSE_NAMES))], (n, 1))
    return layouts, candidates, labels, COARSE_NAMES


def _task_same_kind(rng, n, config, prompts, positions):
    labels = _balanced(rng, n, 2)  # 0: same class, 1: different classes
    first = rng.integers(0, NUM_CLASSES, size=n)
    second = np.where(labels == 0, first, _other_class(rng, first))
    occupied = _place(rng, n, config, np.full(n, 2))
    layouts = np.full((n, config.cells), -1)
    for i in range(n):
        layouts[i, np.flatnonzero(occupied[i])] = (first[i], second[i])
    candidates = np.tile([prompts.kind(True), prompts.kind(False)], (n, 1))
    return layouts, candidates, labels, ("same", "different")


def _task_left_item(rng, n, config, prompts, positions):
    labels = _balanced(rng, n, NUM_CLASSES)
    row = rng.integers(0, config.rows, size=n)
    left = rng.integers(0, config.cols - 1, size=n)
    right = left + 1 + np.floor(rng.random(n) * (config.cols - 1 - left)).astype(np.int64)
    layouts = np.full((n, config.cells), -1)
    layouts[np.arange(n), row * config.cols + left] = labels
    layouts[np.arange(n), row * config.cols + right] = _other_class(rng, labels)
    candidates = np.tile([prompts.left(c) for c in range(NUM_CLASSES)], (n, 1))
    return layouts, candidates, labels, CLASS_NAMES


_BUILDERS = {
    "classify": (_task_classify, "class of a lone item"),
    "classify_at_position": (
        _task_classify_at_position,
        "class of the item in a given cell of 2-4",
    ),
    "count": (_task_count, "number of items"),
    "locate": (_task_locate, "cell of a named item, one distractor"),
    "presence": (_task_presence, "which of two classes is among three items"),
    "coarse": (_task_coarse, "upper body garment, lower body garment or shoe"),
    "same_kind": (_task_same_kind, "two items of the same class or not"),
    "left_item": (_task_left_item, "class of the left item of two side by side"),
}


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
    prompts = _Prompts()
    tasks = []
    for stream, name in enumerate(TASK_NAMES):
        builder, description = _BUILDERS[name]
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
