"""The zero-shot task builders of the evaluation suite and the prompt sets they name.

Each builder draws, for n images, the layouts (class per grid cell), each
image's K candidate prompt sets and the index of the right one; labels are
balanced over the K classes, so any model blind to the image scores 1/K in
expectation. `Prompts` registers each prompt set once by name; a prompt set
is several templates whose text embeddings are averaged (CLIP's prompt
ensembling). `TASK_BUILDERS` maps each of `TASK_NAMES` to its builder and a
one-line description; `aced.eval.tasks.build_suite` renders the images.

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

Axis letters beyond `aced.types`: ``K`` candidates per image, ``G`` grid cells.
"""

import numpy as np

from aced.data.captions import (
    COARSE_NAMES,
    COARSE_OF_CLASS,
    DIFFERENT,
    SAME_KIND,
    class_phrase,
    coarse_phrase,
    count_phrase,
)
from aced.data.fashion_mnist import CLASS_NAMES, NUM_CLASSES
from aced.data.scene_layouts import SceneConfig, sample_layouts

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


class Prompts:
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


TASK_BUILDERS = {
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
