"""LiT-Decoder's tasks on the built-in scenes: captioning and question answering.

Both are built from a split's layouts (the truth about each image), so they
can be made on the curated split (training) and on the eval split (scoring,
Fashion-MNIST test images only):

- **captioning**: the scene's positional caption, items in row-major order
  ("a dress in the top left and a bag in the bottom right"), after the prompt
  ``describe the image``; scored by CIDEr-D (`aced.eval.cider`), exact match,
  item accuracy (the share of the scene's items named with the right class
  in the right cell) and cell accuracy (the share of all cells whose content,
  an item or empty, the caption gets right: it counts invented items too).
- **question answering**, one question of each type per scene (`QUESTION_TYPES`):
  ``what is in the top left ?`` (``a dress`` or ``nothing``), ``how many items
  are there ?`` (a number word), ``is there a bag ?`` (``yes`` / ``no``; the
  class asked about is present in half the scenes); scored by exact match,
  overall and per type.

A sequence is prompt, then target, then ``<eos>``; `DecoderVocab` maps its
words to ids (``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, then the words), with the
comma as a word of its own.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np
from jaxtyping import Int

from aced.data.captions import (
    NUMBER_WORDS,
    describe,
    position_names,
    vocabulary_texts,
    with_article,
)
from aced.data.fashion_mnist import CLASS_NAMES, NUM_CLASSES
from aced.data.scene_layouts import SceneConfig, SceneSplit
from aced.eval.cider import cider_d

CAPTION_PROMPT = "describe the image"
QUESTION_TYPES = ("what_at", "count", "presence")
NOTHING = "nothing"
SPECIALS = ("<pad>", "<bos>", "<eos>")
PAD_ID, BOS_ID, EOS_ID = range(len(SPECIALS))

_ITEM_NAMES = tuple(with_article("pair of trousers" if n == "trousers" else n) for n in CLASS_NAMES)


def _words(text: str) -> list[str]:
    return text.replace(",", " ,").split()


def positional_caption(layout: Sequence[int], config: SceneConfig) -> str:
    """The caption target: every item and its cell, row-major, no prefix."""
    positions = position_names(config.rows, config.cols)
    return describe(list(layout), positions, config.cols, (0.0, 0.0, 0.0, 0.0), "position")


def parse_caption(text: str, config: SceneConfig) -> list[int]:
    """The layout a positional caption states (class per cell, -1 empty); parts that name
    no known item or cell are ignored, a cell named twice keeps its first item."""
    positions = position_names(config.rows, config.cols)
    if len(positions) == 1:  # a 1x1 grid's captions name the item only
        name = text.strip()
        return [_ITEM_NAMES.index(name) if name in _ITEM_NAMES else -1]
    layout = [-1] * len(positions)
    for part in text.replace(" and ", ", ").split(", "):
        item, _, cell = part.strip().partition(" in the ")
        if item in _ITEM_NAMES and cell in positions and layout[positions.index(cell)] < 0:
            layout[positions.index(cell)] = _ITEM_NAMES.index(item)
    return layout


def questions(layout: Sequence[int], config: SceneConfig, u: Sequence[float]) -> list[tuple]:
    """(type, question, answer) of each `QUESTION_TYPES` for one layout; `u`: two uniforms
    that pick the cell asked about and the class of the presence question."""
    positions = position_names(config.rows, config.cols)
    cell = min(int(u[0] * len(positions)), len(positions) - 1)
    present = sorted({c for c in layout if c >= 0})
    absent = [c for c in range(NUM_CLASSES) if c not in present]
    ask_present = u[1] < 0.5 or not absent
    pool = present if ask_present else absent
    asked = pool[min(int((u[1] % 0.5) * 2 * len(pool)), len(pool) - 1)]
    what = _ITEM_NAMES[layout[cell]] if layout[cell] >= 0 else NOTHING
    count = sum(1 for c in layout if c >= 0)
    return [
        ("what_at", f"what is in the {positions[cell]} ?", what),
        ("count", "how many items are there ?", NUMBER_WORDS[count]),
        ("presence", f"is there {_ITEM_NAMES[asked]} ?", "yes" if ask_present else "no"),
    ]


@dataclasses.dataclass(frozen=True)
class DecoderVocab:
    """Words of the decoder's sequences; ids 0-2 are `SPECIALS`."""

    words: tuple[str, ...]

    @classmethod
    def for_scenes(cls, config: SceneConfig) -> "DecoderVocab":
        """Every word a caption, question or answer of `config`'s scenes can hold."""
        texts = vocabulary_texts(config.rows, config.cols, config.cells)
        texts += [CAPTION_PROMPT, NOTHING, "yes no", "what is in the how many items are there ?"]
        texts += [", and in the", *position_names(config.rows, config.cols), *_ITEM_NAMES]
        return cls(tuple(sorted({w for t in texts for w in _words(t)} - set(SPECIALS))))

    @property
    def size(self) -> int:
        return len(SPECIALS) + len(self.words)

    def missing(self, texts: Sequence[str]) -> list[str]:
        known = set(self.words)
        return sorted({w for t in texts for w in _words(t)} - known)

    def encode(self, prompt: str, target: str, length: int) -> tuple[np.ndarray, int]:
        """``prompt target <eos>`` as `length` ids (padded with 0), and the prompt's length."""
        index = {w: i + len(SPECIALS) for i, w in enumerate(self.words)}
        missing = self.missing([prompt, target])
        if missing:
            raise ValueError(f"the decoder vocabulary lacks the words {missing}: build it with "
                             "DecoderVocab.for_scenes or add them")  # fmt: skip
        p, t = [index[w] for w in _words(prompt)], [index[w] for w in _words(target)]
        ids = [*p, *t, EOS_ID]
        if len(ids) > length:
            raise ValueError(f"'{prompt} {target}' needs {len(ids)} tokens > length={length}")
        return np.asarray(ids + [PAD_ID] * (length - len(ids)), np.int32), len(p)

    def decode(self, ids: Int[np.ndarray, " L"], prompt_len: int) -> str:
        """The words after the prompt, up to the first ``<eos>`` (specials dropped)."""
        words = []
        for i in ids[prompt_len:].tolist():
            if i == EOS_ID:
                break
            if i >= len(SPECIALS):
                words.append(self.words[i - len(SPECIALS)])
        return " ".join(words).replace(" ,", ",")


@dataclasses.dataclass(frozen=True)
class LitExamples:
    """Rows of one task set: `image` (index into the split), `tokens` (n, L), `prompt_len`
    (n,), `task` (``caption`` or a question type) and the `target` text of each row."""

    image: np.ndarray
    tokens: np.ndarray
    prompt_len: np.ndarray
    task: tuple[str, ...]
    target: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.task)


def sequence_length(config: SceneConfig) -> int:
    """Tokens of the longest sequence: the caption prompt, the longest caption, ``<eos>``."""
    return len(_words(CAPTION_PROMPT)) + config.max_caption_tokens + 1


def build_examples(
    split: SceneSplit, config: SceneConfig, vocab: DecoderVocab, seed: int
) -> LitExamples:
    """One caption and one question of each type per scene of `split`."""
    u = np.random.default_rng(seed).random((len(split), 2)).tolist()
    length = sequence_length(config)
    rows = []
    for i, layout in enumerate(split.layouts.tolist()):
        rows.append((i, "caption", CAPTION_PROMPT, positional_caption(layout, config)))
        rows += [(i, kind, q, a) for kind, q, a in questions(layout, config, u[i])]
    missing = vocab.missing([text for row in rows for text in row[2:]])
    if missing:
        raise ValueError(
            f"the decoder vocabulary does not cover the targets: {len(missing)} words missing "
            f"({', '.join(missing[:10])}); add them to the vocabulary (--vocab file), or use "
            "DecoderVocab.for_scenes, every word of the built-in scenes' tasks"
        )
    encoded = [vocab.encode(prompt, target, length) for _, _, prompt, target in rows]
    return LitExamples(
        image=np.asarray([r[0] for r in rows], np.int32),
        tokens=np.stack([e[0] for e in encoded]),
        prompt_len=np.asarray([e[1] for e in encoded], np.int32),
        task=tuple(r[1] for r in rows),
        target=tuple(r[3] for r in rows),
    )


def caption_scores(
    predictions: Sequence[str], layouts: np.ndarray, config: SceneConfig
) -> dict[str, float]:
    """CIDEr-D, exact match, item and cell accuracy of predicted captions of `layouts`."""
    targets = [positional_caption(layout, config) for layout in layouts.tolist()]
    items = cells = right_items = right_cells = 0
    for text, layout in zip(predictions, layouts.tolist()):
        said = parse_caption(text, config)
        items += sum(1 for c in layout if c >= 0)
        right_items += sum(1 for c, s in zip(layout, said) if c >= 0 and c == s)
        cells += len(layout)
        right_cells += sum(1 for c, s in zip(layout, said) if c == s)
    return {
        "cider": float(np.mean(cider_d(predictions, [[t] for t in targets]))),
        "exact_match": float(np.mean([p == t for p, t in zip(predictions, targets)])),
        "item_accuracy": right_items / max(items, 1),
        "cell_accuracy": right_cells / max(cells, 1),
    }


def answer_scores(
    predictions: Sequence[str], answers: Sequence[str], kinds: Sequence[str]
) -> dict[str, float]:
    """Exact match of answers, overall and per question type present."""
    right = np.asarray([p == a for p, a in zip(predictions, answers)], np.float64)
    out = {"exact_match": float(right.mean())}
    for kind in QUESTION_TYPES:
        rows = [i for i, k in enumerate(kinds) if k == kind]
        if rows:
            out[f"exact_match/{kind}"] = float(right[rows].mean())
    return out
