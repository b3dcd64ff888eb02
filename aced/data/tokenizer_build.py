"""``aced tokenizer build``: a word-level or BPE tokenizer trained from a dataset's captions.

    aced tokenizer build data.source=parquet data.path='train-*.parquet' \
        [data.caption_column=text] [--kind word|bpe] [--vocab-size N] [--max-len L] \
        [--extra-texts FILE] [--class-names FILE --templates FILE] --out tokenizer.json

The captions come from the same ``data.*`` fields as ``aced train`` (any
supported format, or the built-in scenes); extra texts (one per line, e.g.
class names expanded through prompt templates, where ``{}`` stands for the
class name) join the corpus so that evaluation prompts are in the
vocabulary. Both kinds are Hugging Face `tokenizers` models with aced's
conventions (lower-cased, ``<pad>`` / ``<eos>`` / ``<unk>``, each row ending
in ``<eos>``, padded to L). L defaults to the length that covers every
caption. The command prints the vocabulary size and the lengths that cover
99 % and 100 % of the captions, and the ``aced train`` fields to use it.
"""

import pathlib
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import tokenizers
from tokenizers import models, trainers
from tqdm.auto import tqdm

from aced.data.tokenize import (
    EOS,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    TextTokenizer,
    _fix_length,
    save_tokenizer,
    train_backend,
)

KINDS = ("word", "bpe")


def caption_texts(source) -> list[str]:
    """Every caption of an `aced.train.inputs.build_source` source, images left unread."""
    if hasattr(source, "split"):  # the built-in scenes
        return list(source.split.captions)
    column = source.dataset[source.caption_column]
    return ["" if c is None else str(c) for c in column]


def prompt_texts(class_names: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every class name through every template (``{}`` is the class name)."""
    for template in templates:
        if "{}" not in template:
            raise ValueError(f"template {template!r} has no {{}} for the class name")
    return [t.format(name) for name in class_names for t in templates]


def train_tokenizer(
    texts: Sequence[str],
    *,
    kind: Literal["word", "bpe"] = "word",
    vocab_size: int = 8192,
    progress: bool = True,
) -> tokenizers.Tokenizer:
    """An unpadded `tokenizers` backend trained on `texts`; rows end with ``<eos>``.

    `vocab_size` bounds the BPE vocabulary (special tokens included); the
    word kind keeps every word it sees.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} must be one of {KINDS}")
    if not texts:
        raise ValueError("no texts to train a tokenizer on")
    if kind == "word":
        model = models.WordLevel(unk_token=UNK)
        trainer = trainers.WordLevelTrainer(
            special_tokens=list(SPECIAL_TOKENS), show_progress=False
        )
    else:
        if vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(
                f"vocab_size={vocab_size} must exceed the {len(SPECIAL_TOKENS)} special tokens"
            )
        model = models.BPE(unk_token=UNK)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
        )
    rows: Iterable[str] = tqdm(texts, desc="tokenizer", unit=" texts", disable=not progress)
    backend = train_backend(model, trainer, rows, length=len(texts))
    return backend


def length_coverage(backend: tokenizers.Tokenizer, texts: Sequence[str]) -> dict[str, int]:
    """Tokens per row (``<eos>`` included) that cover 99 % and 100 % of `texts`: the least
    length at least that fraction of them fits in."""
    lengths = np.array([len(e.ids) for e in backend.encode_batch(list(texts))])
    p99 = np.quantile(lengths, 0.99, method="inverted_cdf")
    return {"p99": int(p99), "max": int(lengths.max())}


def build(
    captions: Sequence[str],
    out: str | pathlib.Path,
    *,
    kind: Literal["word", "bpe"] = "word",
    vocab_size: int = 8192,
    max_len: int | None = None,
    extra_texts: Sequence[str] = (),
    progress: bool = True,
) -> dict:
    """Train on `captions` + `extra_texts`, fix L, write ``tokenizer.json`` at `out` (a file
    or a directory); returns what the command prints (path, vocabulary size, lengths)."""
    backend = train_tokenizer(
        [*captions, *extra_texts], kind=kind, vocab_size=vocab_size, progress=progress
    )
    coverage = length_coverage(backend, captions)
    length = coverage["max"] if max_len is None else max_len
    if length < 2:
        raise ValueError(f"max_len={length} must be at least 2 (one token and <eos>)")
    pad_id = backend.token_to_id(PAD)
    _fix_length(backend, length, pad_id, "left")
    out = pathlib.Path(out)
    if out.suffix != ".json":
        out.mkdir(parents=True, exist_ok=True)
    path = save_tokenizer(
        TextTokenizer(backend, length, pad_id, backend.token_to_id(EOS), "left"), out
    )
    return {
        "path": str(path),
        "vocab_size": backend.get_vocab_size(),
        "max_len": length,
        **coverage,
    }
