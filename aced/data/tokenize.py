"""Tokenizers: `TextTokenizer`, the word-level one of the built-in captions,
``tokenizer.json`` files, and the one text canonicalisation.

Every tokenizer is a `TextTokenizer`: a list of texts -> int32 token ids of
shape (n, L), with L = `max_len` fixed, through the Hugging Face `tokenizers`
library or a SentencePiece backend (`aced.data.hf_tokenizer`).

Text canonicalisation is `text_normalizer` (its result on one string:
`canonicalize_text`): the word tokenizer lower-cases with it, SigLIP's
SentencePiece tokenizer lower-cases, strips ASCII punctuation and collapses
white space with it (big_vision / transformers ``canonicalize_text``).
Files loaded as they are (``tokenizer.json``, a raw SentencePiece model) keep
their own normalisation.

Convention of the built-in word tokenizer (ids: ``<pad>`` 0, ``<eos>`` 1,
``<unk>`` 2). SigLIP's text tower pads every caption to L tokens and pools
the hidden state at the LAST position, L - 1 (big_vision ``pool_type="last"``,
HF ``SiglipTextTransformer``). The built-in tokenizer therefore pads on the
LEFT and ends every row with ``<eos>``::

    "two bags"  ->  <pad> <pad> ... <pad> two bags <eos>

so position L - 1 always holds ``<eos>``, a real token that has attended to
the whole caption (and that a causal or padding-masked tower would still
see). Captions longer than L - 1 words keep their first L - 1 words, then
``<eos>``. ``padding_side="right"`` gives ``two bags <eos> <pad> ...`` instead,
as SigLIP's own tokenizer does; with it the pooled position is a pad token,
which works only because SigLIP's text attention is bidirectional and
unmasked.

Files loaded with `load_tokenizer` keep their own special tokens and
post-processing (e.g. SigLIP's ``tokenizer.json`` appends ``</s>``); only the
length and the padding side are set here.
"""

import dataclasses
import os
import pathlib
import re
import string
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import tokenizers
from beartype import beartype as typechecker
from jaxtyping import Int32, jaxtyped
from tokenizers import Regex, models, normalizers, pre_tokenizers, processors, trainers

from aced.data.captions import vocabulary_texts
from aced.data.scenes import SceneConfig

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, EOS, UNK)  # ids 0, 1, 2
_PAD_NAMES = (PAD, "[PAD]", "<|pad|>", "<|endoftext|>")


@dataclasses.dataclass(frozen=True)
class TextTokenizer:
    """Texts -> int32 (n, max_len) token ids.

    **Fields:**

    - `backend`: a `tokenizers.Tokenizer` whose padding and truncation are set
      to `max_len`; or a SentencePiece backend: anything with
      ``encode(texts) -> list of id lists``, ``get_piece_size()`` and
      ``decode(ids)`` (a `SentencePieceProcessor`, `aced.data.hf_tokenizer.SiglipSentencePiece`).
    - `max_len`: L, the fixed row length.
    - `pad_id`: id used for padding; `eos_id`: appended id (SentencePiece only).
    - `padding_side`: ``"left"`` or ``"right"``.
    """

    backend: Any
    max_len: int
    pad_id: int
    eos_id: int | None = None
    padding_side: Literal["left", "right"] = "left"

    @property
    def vocab_size(self) -> int:
        if isinstance(self.backend, tokenizers.Tokenizer):
            return self.backend.get_vocab_size(with_added_tokens=True)
        return int(self.backend.get_piece_size())

    @jaxtyped(typechecker=typechecker)
    def __call__(self, texts: Sequence[str]) -> Int32[np.ndarray, "n L"]:
        """Token ids of `texts`, one row of exactly `max_len` ids per text."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        if isinstance(self.backend, tokenizers.Tokenizer):
            rows = [e.ids for e in self.backend.encode_batch(list(texts))]
        else:
            rows = self._sentencepiece_rows(texts)
        return np.asarray(rows, dtype=np.int32).reshape(len(texts), self.max_len)

    def _sentencepiece_rows(self, texts: Sequence[str]) -> list[list[int]]:
        # SiglipTokenizer: pieces, truncated to L - 1, then </s> unless the
        # pieces end in it already, then padding.
        tail = [] if self.eos_id is None else [self.eos_id]
        rows = []
        for ids in self.backend.encode(list(texts)):
            ids = list(ids[: self.max_len - len(tail)])
            if ids[-1:] != tail:
                ids += tail
            pad = [self.pad_id] * (self.max_len - len(ids))
            rows.append(pad + ids if self.padding_side == "left" else ids + pad)
        return rows

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of one row, special tokens dropped."""
        ids = [int(i) for i in ids]
        if isinstance(self.backend, tokenizers.Tokenizer):
            return self.backend.decode(ids, skip_special_tokens=True)
        return self.backend.decode([i for i in ids if i not in (self.pad_id, self.eos_id)])


# ASCII punctuation (Python's string.punctuation) and white space, whose
# runs collapse to one space; \x1c-\x1f count as white space, as in Python.
_PUNCTUATION = "[" + re.escape(string.punctuation) + "]"
_WHITESPACE = r"[\s\x1c-\x1f]+"


def text_normalizer(*, lower: bool, strip_punctuation: bool) -> normalizers.Normalizer:
    """The text canonicalisation of aced's tokenizers, as a `tokenizers` normalizer.

    **Arguments:**

    - `lower`: lower-case (per character, Unicode).
    - `strip_punctuation`: remove ASCII punctuation, collapse runs of white
      space into one space and strip both ends (big_vision's
      ``canonicalize_text``, transformers ``SiglipTokenizer``).

    **Returns:** the normalizer; set as a `tokenizers.Tokenizer`'s
    ``normalizer`` it is saved with its ``tokenizer.json``.
    """
    steps = [normalizers.Lowercase()] if lower else []
    if strip_punctuation:
        steps += [
            normalizers.Replace(Regex(_PUNCTUATION), ""),
            normalizers.Replace(Regex(_WHITESPACE), " "),
            normalizers.Strip(),
        ]
    return steps[0] if len(steps) == 1 else normalizers.Sequence(steps)


def canonicalize_text(text: str, *, lower: bool = True, strip_punctuation: bool = True) -> str:
    """`text` canonicalised by `text_normalizer` (default: SigLIP's canonicalisation)."""
    return text_normalizer(lower=lower, strip_punctuation=strip_punctuation).normalize_str(text)


def _fix_length(backend: tokenizers.Tokenizer, max_len: int, pad_id: int, side: str) -> None:
    pad_token = backend.id_to_token(pad_id)
    backend.enable_truncation(max_length=max_len)
    backend.enable_padding(direction=side, pad_id=pad_id, pad_token=pad_token, length=max_len)


def train_backend(
    model: models.Model, trainer: trainers.Trainer, texts: Iterable[str], length: int | None = None
) -> tokenizers.Tokenizer:
    """aced's conventions around a `tokenizers` model: lower-cased, split on white space and
    punctuation, trained on `texts` (`length` of them, for a progress bar), rows ending in
    ``<eos>``; not yet padded."""
    backend = tokenizers.Tokenizer(model)
    backend.normalizer = text_normalizer(lower=True, strip_punctuation=False)
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(texts, trainer=trainer, length=length)
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", special_tokens=[(EOS, backend.token_to_id(EOS))]
    )
    return backend


def build_word_tokenizer(
    texts: Iterable[str], *, max_len: int, padding_side: Literal["left", "right"] = "left"
) -> TextTokenizer:
    """A lower-cased word-level tokenizer whose vocabulary is the words of `texts`.

    Words are split on white space and punctuation ("t-shirt" -> t, -, shirt).
    Rows end with ``<eos>``; unknown words become ``<unk>``.

    **Arguments:**

    - `texts`: corpus the vocabulary is built from.
    - `max_len`: L, tokens per row, ``<eos>`` included (at least 2).
    - `padding_side`: ``"left"`` (default; see the module docstring) or ``"right"``.

    **Returns:** a `TextTokenizer`.
    """
    if max_len < 2:
        raise ValueError(f"max_len={max_len} must be at least 2 (one word and <eos>)")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side={padding_side!r} must be 'left' or 'right'")
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    backend = train_backend(models.WordLevel(unk_token=UNK), trainer, texts)
    eos_id = backend.token_to_id(EOS)
    _fix_length(backend, max_len, backend.token_to_id(PAD), padding_side)
    return TextTokenizer(backend, max_len, backend.token_to_id(PAD), eos_id, padding_side)


def builtin_tokenizer(
    config: SceneConfig | None = None, *, max_len: int | None = None
) -> TextTokenizer:
    """The word tokenizer of the built-in scene captions and evaluation prompts.

    **Arguments:**

    - `config`: the `aced.data.scenes.SceneConfig` of the scenes (its grid
      gives the position words); the default config when None.
    - `max_len`: L; by default `config.max_caption_tokens`, long enough for
      every caption of that config.

    **Returns:** a `TextTokenizer`; with the same config, the same vocabulary.
    """
    config = SceneConfig() if config is None else config
    length = config.max_caption_tokens if max_len is None else max_len
    return build_word_tokenizer(
        vocabulary_texts(config.rows, config.cols, config.max_items), max_len=length
    )


def save_tokenizer(tokenizer: TextTokenizer, path: str | os.PathLike) -> pathlib.Path:
    """Write a `tokenizers`-backed tokenizer as a ``tokenizer.json`` file.

    **Arguments:**

    - `tokenizer`: built or loaded with a `tokenizers` backend.
    - `path`: a file path, or a directory to write ``tokenizer.json`` into.

    **Returns:** the path written.
    """
    if not isinstance(tokenizer.backend, tokenizers.Tokenizer):
        raise TypeError("only tokenizers-backed tokenizers can be saved as tokenizer.json")
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    path.write_text(tokenizer.backend.to_str(pretty=True))
    return path


def _pad_id(backend: tokenizers.Tokenizer, path: pathlib.Path) -> int:
    if backend.padding is not None:
        return int(backend.padding["pad_id"])
    for name in _PAD_NAMES:
        if backend.token_to_id(name) is not None:
            return int(backend.token_to_id(name))
    raise ValueError(
        f"{path} defines no padding and none of the pad tokens {_PAD_NAMES}; "
        "add a pad token to the tokenizer (e.g. tokenizer.add_special_tokens(['<pad>']))"
    )


def load_tokenizer(
    path: str | os.PathLike,
    *,
    max_len: int | None = None,
    padding_side: Literal["left", "right"] | None = None,
    pad_token: str | None = None,
) -> TextTokenizer:
    """Load a Hugging Face ``tokenizer.json`` (ours or any model's).

    **Arguments:**

    - `path`: the ``tokenizer.json`` file or a directory holding one.
    - `max_len`: L; required unless the file fixes a padding length.
    - `padding_side`: overrides the file's padding direction (default: the
      file's, else ``"right"``).
    - `pad_token`: the token to pad with (e.g. ``tokenizer_config.json``'s);
      default: the file's padding token, else a conventional pad token.

    **Returns:** a `TextTokenizer`.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"tokenizer file {path} not found; pass a tokenizer.json file or its directory"
        )
    try:
        backend = tokenizers.Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust library raises a bare Exception on bad JSON
        raise ValueError(f"{path} is not a readable tokenizer.json: {err}") from err
    padding = backend.padding
    length = max_len if max_len is not None else (padding or {}).get("length")
    if length is None:
        raise ValueError(f"{path} fixes no padding length; pass max_len=")
    if int(length) < 1:
        raise ValueError(f"max_len={length} must be >= 1")
    side = padding_side or (padding or {}).get("direction", "right")
    pad_id = _pad_id(backend, path) if pad_token is None else backend.token_to_id(pad_token)
    if pad_id is None:
        raise ValueError(
            f"{path} has no token {pad_token!r} to pad with; set pad_token in "
            "tokenizer_config.json to a token of the vocabulary"
        )
    _fix_length(backend, int(length), pad_id, side)
    eos_id = backend.token_to_id(EOS)
    return TextTokenizer(backend, int(length), pad_id, eos_id, side)
