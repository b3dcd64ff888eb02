"""Built-in scenes: images match layouts, captions are true (or false where
they should be), pools are disjoint, everything is deterministic and fast."""

import collections
import re
import time

import numpy as np
import pytest
from data.fmnist_fixture import read_cells, write_fake_fashion_mnist

from aced.data import captions as cap
from aced.data.scenes import (
    QUALITY,
    SceneConfig,
    WebNoise,
    curated_split,
    eval_split,
    make_scenes,
    web_split,
)

NUMBERS = {w: i for i, w in enumerate(cap.NUMBER_WORDS)}
PREFIXES = sorted(
    set(cap.LIST_PREFIXES + cap.WITH_PREFIXES + cap.RELATION_PREFIXES) - {""}, key=len, reverse=True
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


def _nouns() -> dict[str, tuple[str, int, int]]:
    # phrase -> (kind "class" | "coarse", id, count); built independently of
    # the generator's helpers from the plain names.
    table = {}
    singular = ["pair of trousers" if n == "trousers" else n for n in cap.CLASS_NAMES]
    plural = [
        "pairs of trousers" if n == "trousers" else ("dresses" if n == "dress" else n + "s")
        for n in cap.CLASS_NAMES
    ]
    for c, (s, p) in enumerate(zip(singular, plural)):
        table[("an " if s[0] in "aeiou" else "a ") + s] = ("class", c, 1)
        for k in range(2, 10):
            table[f"{cap.NUMBER_WORDS[k]} {p}"] = ("class", c, k)
    for g, s in enumerate(cap.COARSE_NAMES):
        table[("an " if s[0] in "aeiou" else "a ") + s] = ("coarse", g, 1)
        for k in range(2, 10):
            table[f"{cap.NUMBER_WORDS[k]} {s}s"] = ("coarse", g, k)
    return table


NOUNS = _nouns()
SINGULAR = {p: v[1] for p, v in NOUNS.items() if v[0] == "class" and v[2] == 1}


def _groups(text: str) -> list[str]:
    return text.replace(" and ", ", ").split(", ")


def _list_is_true(text: str, items: list[int]) -> bool:
    parsed = collections.Counter()
    for group in _groups(text):
        if group not in NOUNS:
            raise AssertionError(f"unparsable group {group!r} in {text!r}")
        kind, ident, count = NOUNS[group]
        parsed[(kind, ident)] += count
    as_classes = collections.Counter(("class", c) for c in items)
    as_coarse = collections.Counter(
        ("coarse", cap.COARSE_OF_CLASS[c]) if cap.COARSE_OF_CLASS[c] >= 0 else ("class", c)
        for c in items
    )
    return parsed in (as_classes, as_coarse)


def caption_is_true(caption: str, layout: np.ndarray, rows: int, cols: int) -> bool:
    """A reference reading of the caption grammar: is `caption` true of `layout`?"""
    positions = cap.position_names(rows, cols)
    cells = [(g, int(c)) for g, c in enumerate(layout) if c >= 0]
    items = [c for _, c in cells]
    text = caption
    for prefix in PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    m = re.fullmatch(r"(\w+) (item|items|different items)(: (.*)| of the same kind)?", text)
    if m and m.group(1) in NUMBERS:
        k = NUMBERS[m.group(1)]
        ok = k == len(items) and (m.group(2) == "item") == (k == 1)
        if m.group(2) == "different items":
            ok = ok and len(set(items)) == k
        if m.group(3) == " of the same kind":
            ok = ok and len(set(items)) == 1
        elif m.group(4) is not None:
            ok = ok and _list_is_true(m.group(4), items)
        return ok
    for pattern, relation in (
        (r"(.+) on the left and (.+) on the right", "left"),
        (r"(.+) to the left of (.+)", "left"),
        (r"(.+) to the right of (.+)", "right"),
        (r"(.+) next to (.+)", "next"),
        (r"(.+) above (.+)", "above"),
        (r"(.+) below (.+)", "below"),
    ):
        m = re.fullmatch(pattern, text)
        if m and m.group(1) in SINGULAR and m.group(2) in SINGULAR:
            if len(cells) != 2:
                return False
            a, b = SINGULAR[m.group(1)], SINGULAR[m.group(2)]
            (g0, c0), (g1, c1) = cells
            (r0, k0), (r1, k1) = divmod(g0, cols), divmod(g1, cols)
            if relation in ("left", "right", "next") and r0 != r1:
                return False
            if relation in ("above", "below") and k0 != k1:
                return False
            if relation in ("left", "above"):  # a is the first cell in reading order
                return (a, b) == (c0, c1)
            if relation in ("right", "below"):
                return (a, b) == (c1, c0)
            return {a, b} == {c0, c1} and sorted((a, b)) == sorted((c0, c1))
    if " in the " in text:
        parsed = collections.Counter()
        for group in _groups(text):
            noun, where = group.split(" in the ")
            parsed[(SINGULAR[noun], positions.index(where))] += 1
        return parsed == collections.Counter((c, g) for g, c in cells)
    return _list_is_true(text, items)


def test_reference_reader_on_known_captions():
    layout = np.array([8, -1, 8, 6])  # bags top left and bottom left, a shirt bottom right
    true = [
        "two bags and a shirt",
        "a photo of a shirt and two bags",
        "a bag in the top left, a bag in the bottom left and a shirt in the bottom right",
        "three items: two bags and a shirt",
        "an image with three items",
        "two bags and an upper body garment",
    ]
    false = [
        "two bags",
        "a bag in the top right, a bag in the bottom left and a shirt in the bottom right",
        "three items of the same kind",
        "three different items",
        "two items",
    ]
    assert all(caption_is_true(c, layout, 2, 2) for c in true)
    assert not any(caption_is_true(c, layout, 2, 2) for c in false)
    pair = np.array([7, 3, -1, -1])  # sneaker left of a dress
    assert caption_is_true("a sneaker on the left and a dress on the right", pair, 2, 2)
    assert caption_is_true("a dress to the right of a sneaker", pair, 2, 2)
    assert not caption_is_true("a dress to the left of a sneaker", pair, 2, 2)
    assert not caption_is_true("a sneaker above a dress", pair, 2, 2)


def test_config_and_noise_validation():
    for bad in (
        dict(rows=4),
        dict(cols=0),
        dict(cell=0),
        dict(min_items=0),
        dict(max_items=5),
        dict(min_items=3, max_items=2),
        dict(repeat_prob=1.5),
    ):
        with pytest.raises(ValueError):
            SceneConfig(**bad)
    with pytest.raises(ValueError, match="sum"):
        WebNoise(mismatched=0.5, partial=0.5)
    with pytest.raises(ValueError, match="corrupted"):
        WebNoise(corrupted=-0.1)
    assert SceneConfig().image_size == (56, 56) and SceneConfig(
        rows=3, cols=1, cell=10, max_items=3
    ).image_size == (30, 10)


def test_curated_images_match_layouts_and_captions_are_true(data_dir):
    split = curated_split(400, seed=3, data_dir=data_dir)
    assert split.images.shape == (400, 56, 56) and split.images.dtype == np.uint8
    assert (split.quality == QUALITY["clean"]).all()
    for image, layout, caption in zip(split.images, split.layouts, split.captions):
        cells = read_cells(image, 2, 2)
        for content, cls in zip(cells, layout):
            assert (content is None) == (cls < 0)
            if content is not None:
                got_class, index, split_code = content
                assert got_class == cls and split_code == 1 and index % 6 == 0  # curated pool
        assert caption_is_true(caption, layout, 2, 2), caption
    counts = (split.layouts >= 0).sum(1)
    assert counts.min() == 1 and counts.max() == 4


def test_web_noise_tags_and_truth(data_dir):
    n, noise = 500, WebNoise(mismatched=0.2, partial=0.1, corrupted=0.06, duplicate=0.1)
    split = web_split(n, seed=1, noise=noise, data_dir=data_dir)
    tally = collections.Counter(split.quality.tolist())
    assert tally == {
        QUALITY["clean"]: 270,
        QUALITY["mismatched"]: 100,
        QUALITY["partial"]: 50,
        QUALITY["corrupted"]: 30,
        QUALITY["duplicate"]: 50,
    }
    truth = [caption_is_true(c, lay, 2, 2) for c, lay in zip(split.captions, split.layouts)]
    for code, true in zip(split.quality, truth):
        if code in (QUALITY["clean"], QUALITY["duplicate"], QUALITY["corrupted"]):
            assert true
        else:  # mismatched and partial captions are wrong about their image
            assert not true
    clean_images = split.images[split.quality == QUALITY["clean"]]
    for image, layout in zip(clean_images, split.layouts[split.quality == QUALITY["clean"]]):
        for content in read_cells(image, 2, 2):
            if content is not None:
                assert content[2] == 1 and content[1] % 6 != 0  # web pool, disjoint from curated
    # Corrupted images no longer show their items; duplicates are close to a clean image.
    corrupted = split.quality == QUALITY["corrupted"]
    for image, layout in zip(split.images[corrupted], split.layouts[corrupted]):
        readout = [None if c is None else c[0] for c in read_cells(image, 2, 2)]
        assert readout != [None if x < 0 else x for x in layout]
    dups = split.images[split.quality == QUALITY["duplicate"]].astype(np.int16)
    sources = split.images[split.quality != QUALITY["duplicate"]].astype(np.int16)
    for dup in dups[:10]:
        best = min(
            np.abs(np.roll(dup, (dy, dx), axis=(0, 1)) - sources)
            .reshape(len(sources), -1)
            .mean(1)
            .min()
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        )
        assert 0 < best <= 8.5  # only the +-8 brightness jitter (and shifted-in border) remains


def test_eval_split_uses_test_images_only(data_dir):
    split = eval_split(200, seed=0, data_dir=data_dir)
    codes = {c[2] for im in split.images for c in read_cells(im, 2, 2) if c is not None}
    assert codes == {2}


def test_deterministic_from_seed(data_dir):
    a, b = web_split(300, seed=7, data_dir=data_dir), web_split(300, seed=7, data_dir=data_dir)
    c = web_split(300, seed=8, data_dir=data_dir)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.captions == b.captions and (a.quality == b.quality).all()
    assert a.captions != c.captions and not np.array_equal(a.images, c.images)


def test_caption_variety(data_dir):
    split = curated_split(2000, seed=0, data_dir=data_dir)
    captions = split.captions
    assert len(set(captions)) > 1000
    markers = {
        "position": " in the ",
        "relation": (
            " next to ",
            " above ",
            " below ",
            " to the left of ",
            " to the right of ",
            " on the left and ",
        ),
        "count": (" items", " item"),
        "coarse": ("shoe", "garment"),
        "same kind": " of the same kind",
        "different": " different items",
    }
    for name, words in markers.items():
        words = (words,) if isinstance(words, str) else words
        assert sum(any(w in c for w in words) for c in captions) >= 10, name


@pytest.mark.parametrize("rows,cols,cell", [(3, 3, 14), (1, 3, 56), (2, 1, 28)])
def test_grid_shapes_and_resizing(rows, cols, cell):
    # One image per class, each a distinct non-zero ramp.
    pool = (np.arange(10 * 28 * 28, dtype=np.int64).reshape(10, 28, 28) % 251 + 1).astype(np.uint8)
    labels = np.arange(10, dtype=np.uint8)
    config = SceneConfig(rows=rows, cols=cols, cell=cell, max_items=rows * cols)
    split = make_scenes(pool, labels, 50, config, np.random.default_rng(0))
    assert split.images.shape == (50, rows * cell, cols * cell)
    index = (np.arange(cell) * 28) // cell  # nearest neighbour
    for image, layout in zip(split.images, split.layouts):
        for g, c in enumerate(layout):
            r, k = divmod(g, cols)
            patch = image[r * cell : (r + 1) * cell, k * cell : (k + 1) * cell]
            expected = pool[c][index[:, None], index[None, :]] if c >= 0 else 0
            np.testing.assert_array_equal(patch, np.broadcast_to(expected, patch.shape))
    assert all(caption_is_true(c, lay, rows, cols) for c, lay in zip(split.captions, split.layouts))


def test_building_is_fast(data_dir):
    web_split(50, data_dir=data_dir)  # warm the in-memory file cache
    start = time.perf_counter()
    web_split(3000, seed=2, data_dir=data_dir)
    assert time.perf_counter() - start < 2.0
