"""Captions for the built-in scenes: noun phrases, positions and templates.

A scene is a grid of cells, each empty or holding one Fashion-MNIST item.
Its *layout* is one integer per cell (row-major): the item's class, or -1
when the cell is empty. A caption describes the layout in one of five
families, chosen at random per scene:

- ``list``:     "two bags and a shirt", "a photo of a dress"
- ``position``: "a sneaker in the top left and a bag in the bottom right"
- ``relation``: two items sharing a row or a column: "a dress next to a coat",
  "a bag on the left and a sandal on the right", "a shirt above a sneaker"
  (other scenes fall back to ``position``)
- ``count``:    "three items", "two items: a coat and a bag",
  "two items of the same kind", "three different items"
- ``coarse``:   items named by kind: "two shoes and an upper body garment"

Every word a caption can hold is listed by `vocabulary_texts`, from which the
built-in tokenizer is built, so no caption meets an unknown word.
"""

from collections.abc import Sequence

import numpy as np

from aced.data.fashion_mnist import CLASS_NAMES, NUM_CLASSES

# Plurals that English does not form with a plain "s".
PLURAL_NAMES = tuple(
    {"dress": "dresses", "trousers": "trousers"}.get(name, name + "s") for name in CLASS_NAMES
)
# "trousers" is counted in pairs: "a pair of trousers", "two pairs of trousers".
_SINGULAR = tuple("pair of trousers" if n == "trousers" else n for n in CLASS_NAMES)
_PLURAL = tuple("pairs of trousers" if n == "trousers" else n for n in PLURAL_NAMES)

# Coarse kinds (the zero-shot "coarse" task): classes without one are dresses
# and bags. The words avoid "top"/"bottom", which name positions.
COARSE_NAMES = ("upper body garment", "lower body garment", "shoe")
COARSE_OF_CLASS = (0, 1, 0, -1, 0, 2, 0, 2, -1, 2)  # per class: index into COARSE_NAMES or -1

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_ROW_WORDS = {1: ("",), 2: ("top", "bottom"), 3: ("top", "middle", "bottom")}
_COL_WORDS = {1: ("",), 2: ("left", "right"), 3: ("left", "center", "right")}

FAMILIES = ("list", "position", "relation", "count", "coarse")
FAMILY_WEIGHTS = (0.25, 0.25, 0.15, 0.2, 0.15)
LIST_PREFIXES = ("", "a photo of ", "a picture of ", "an image of ")
WITH_PREFIXES = ("", "a photo with ", "an image with ")
RELATION_PREFIXES = ("", "a photo of ")
SAME_KIND = "of the same kind"
DIFFERENT = "different"


def with_article(phrase: str) -> str:
    """``"an ankle boot"``, ``"a bag"``."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def class_phrase(cls: int, count: int = 1) -> str:
    """``"a bag"``, ``"two bags"``, ``"a pair of trousers"``."""
    return with_article(_SINGULAR[cls]) if count == 1 else f"{NUMBER_WORDS[count]} {_PLURAL[cls]}"


def coarse_phrase(kind: int, count: int = 1) -> str:
    """``"a shoe"``, ``"two upper body garments"``."""
    name = COARSE_NAMES[kind]
    return with_article(name) if count == 1 else f"{NUMBER_WORDS[count]} {name}s"


def count_phrase(count: int) -> str:
    """``"one item"``, ``"three items"``."""
    return f"{NUMBER_WORDS[count]} item" + ("" if count == 1 else "s")


def position_names(rows: int, cols: int) -> tuple[str, ...]:
    """Names of the cells of a rows x cols grid, row-major: "top left", ...

    **Arguments:**

    - `rows`, `cols`: grid shape, each in 1..3.

    **Returns:** one name per cell; a 1x1 grid's only cell is "center".
    """
    if rows not in _ROW_WORDS or cols not in _COL_WORDS:
        raise ValueError(f"grid {rows}x{cols} has no position words: rows and cols must be in 1..3")
    names = []
    for r in range(rows):
        for c in range(cols):
            words = [w for w in (_ROW_WORDS[rows][r], _COL_WORDS[cols][c]) if w]
            names.append(" ".join(words) if words else "center")
    return tuple(names)


def join_phrases(parts: Sequence[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _grouped(classes: Sequence[int], coarse: bool) -> str:
    # Groups equal names in order of first appearance: (bag, shirt, bag) -> two bags and a shirt.
    keys = [COARSE_OF_CLASS[c] if coarse and COARSE_OF_CLASS[c] >= 0 else c for c in classes]
    kinds = [coarse and COARSE_OF_CLASS[c] >= 0 for c in classes]
    order: list[tuple[bool, int]] = []
    for kind, key in zip(kinds, keys):
        if (kind, key) not in order:
            order.append((kind, key))
    counts = [sum(1 for k, x in zip(kinds, keys) if (k, x) == item) for item in order]
    return join_phrases(
        [
            coarse_phrase(key, n) if kind else class_phrase(key, n)
            for (kind, key), n in zip(order, counts)
        ]
    )


def _pick(options: Sequence[str], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def _relation(cells: list[int], classes: list[int], cols: int, u: float) -> str | None:
    (g0, g1), (c0, c1) = cells, classes
    (r0, k0), (r1, k1) = divmod(g0, cols), divmod(g1, cols)
    a, b = with_article(_SINGULAR[c0]), with_article(_SINGULAR[c1])
    if r0 == r1:  # g0 is left of g1 (cells are sorted)
        options = (
            f"{a} on the left and {b} on the right",
            f"{a} to the left of {b}",
            f"{b} to the right of {a}",
            f"{a} next to {b}",
            f"{b} next to {a}",
        )
    elif k0 == k1:  # g0 is above g1
        options = (f"{a} above {b}", f"{b} below {a}")
    else:
        return None
    return _pick(options, u)


def describe(
    layout: Sequence[int], positions: Sequence[str], cols: int, u: Sequence[float], family: str
) -> str:
    """One caption of one layout.

    **Arguments:**

    - `layout`: class per cell, row-major, -1 for an empty cell; at least one
      item.
    - `positions`: cell names from `position_names`; `cols`: grid width.
    - `u`: four uniform numbers in [0, 1) that make every choice (prefix,
      template, item order), so that captions are drawn without a Python RNG.
    - `family`: one of `FAMILIES`.

    **Returns:** the caption, lower case.
    """
    cells = [g for g, c in enumerate(layout) if c >= 0]
    classes = [int(layout[g]) for g in cells]
    if not cells:
        raise ValueError("a scene needs at least one item to be described")
    # A rotation of the items, drawn from u[2], varies their order in lists.
    shift = int(u[2] * len(cells)) % len(cells)
    order = list(range(shift, len(cells))) + list(range(shift))
    if family == "relation" and len(cells) == 2:
        text = _relation(cells, classes, cols, u[1])
        if text is not None:
            return _pick(RELATION_PREFIXES, u[0]) + text
    if family in ("position", "relation") and len(positions) > 1:
        parts = [
            f"{with_article(_SINGULAR[classes[i]])} in the {positions[cells[i]]}" for i in order
        ]
        return _pick(WITH_PREFIXES, u[0]) + join_phrases(parts)
    if family == "count":
        k = len(cells)
        forms = [
            count_phrase(k),
            f"{count_phrase(k)}: {_grouped([classes[i] for i in order], False)}",
        ]
        if k >= 2 and len(set(classes)) == 1:
            forms.append(f"{count_phrase(k)} {SAME_KIND}")
        elif k >= 2 and len(set(classes)) == k:
            forms.append(f"{NUMBER_WORDS[k]} {DIFFERENT} items")
        return _pick(WITH_PREFIXES if u[3] < 0.5 else ("", "a photo of "), u[0]) + _pick(
            forms, u[1]
        )
    coarse = family == "coarse"
    return _pick(LIST_PREFIXES, u[0]) + _grouped([classes[i] for i in order], coarse)


def describe_all(
    layouts: np.ndarray,
    rows: int,
    cols: int,
    rng: np.random.Generator,
    families: Sequence[str] = FAMILIES,
) -> list[str]:
    """Captions of many layouts, each in a family drawn from `FAMILY_WEIGHTS`.

    **Arguments:**

    - `layouts`: int array (n, rows * cols), -1 for empty cells.
    - `rows`, `cols`: grid shape; `rng`: source of every random choice.
    - `families`: the families allowed (weights renormalised over them).

    **Returns:** n captions.
    """
    unknown = set(families) - set(FAMILIES)
    if unknown or not families:
        raise ValueError(f"families={tuple(families)} must be a non-empty subset of {FAMILIES}")
    weights = np.asarray([FAMILY_WEIGHTS[FAMILIES.index(f)] for f in families], dtype=np.float64)
    n = layouts.shape[0]
    picks = rng.choice(len(families), size=n, p=weights / weights.sum())
    u = rng.random((n, 4)).tolist()
    positions = position_names(rows, cols)
    rows_list = layouts.tolist()
    return [describe(rows_list[i], positions, cols, u[i], families[picks[i]]) for i in range(n)]


def vocabulary_texts(rows: int, cols: int, max_items: int) -> list[str]:
    """Texts that together hold every word a caption or prompt can use.

    **Arguments:**

    - `rows`, `cols`: grid shape (its position words); `max_items`: largest
      number word needed.

    **Returns:** a list of short texts to build a word vocabulary from.
    """
    texts = [class_phrase(c, n) for c in range(NUM_CLASSES) for n in (1, 2)]
    texts += [coarse_phrase(k, n) for k in range(len(COARSE_NAMES)) for n in (1, 2)]
    texts += [count_phrase(n) for n in range(1, max(max_items, 2) + 1)]
    texts += list(position_names(rows, cols))
    texts += [p for p in LIST_PREFIXES + WITH_PREFIXES + RELATION_PREFIXES if p]
    texts += [
        "in the",
        "on the left and on the right",
        "to the left of",
        "to the right of",
        "next to",
        "above",
        "below",
        SAME_KIND,
        DIFFERENT,
        ", :",
    ]
    return texts
