"""SentencePiece models and the tokenizers of Hugging Face checkpoints, as `TextTokenizer`s.

`load_hf_tokenizer` reads a transformers checkpoint's tokenizer (or that of
its `aced.convert.convert_hf_siglip` output) as transformers would:
``spiece.model`` (every released SigLIP) through `SiglipSentencePiece`, which
re-implements ``SiglipTokenizer`` on ``sentencepiece`` alone, else a
``tokenizer.json`` through `load_tokenizer`. `load_sentencepiece` reads a
SentencePiece model as it is.
"""

import json
import os
import pathlib
import re
from collections.abc import Sequence
from typing import Any, Literal

from aced.data.tokenize import TextTokenizer, canonicalize_text, load_tokenizer
from aced.models.hf_siglip import TEXT_DEFAULTS

# Tokenizer files a converted checkpoint carries along (config.json is the model's).
TOKENIZER_FILES = (
    "spiece.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
SPIECE_UNDERLINE = "\u2581"


def _sentencepiece():
    try:
        import sentencepiece
    except ImportError as err:
        raise ImportError(
            "SentencePiece tokenizers need the sentencepiece package: pip install sentencepiece"
        ) from err
    return sentencepiece


def load_sentencepiece(
    path: str | os.PathLike, *, max_len: int, padding_side: Literal["left", "right"] = "right"
) -> TextTokenizer:
    """Load a SentencePiece ``.model`` file (needs the `sentencepiece` package).

    Rows are the pieces, truncated to L - 1, then ``</s>`` when the model has
    one, then padding. The text is left to the model's own normaliser (no
    lower-casing or punctuation stripping; `load_hf_tokenizer` reads a SigLIP
    checkpoint with SigLIP's canonicalisation).

    **Arguments:**

    - `path`: the ``.model`` file; `max_len`: L; `padding_side`: ``"left"`` or ``"right"``.

    **Returns:** a `TextTokenizer`.
    """
    sentencepiece = _sentencepiece()
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SentencePiece model {path} not found")
    processor = sentencepiece.SentencePieceProcessor(model_file=str(path))
    pad_id = processor.pad_id() if processor.pad_id() >= 0 else processor.eos_id()
    if pad_id < 0:
        raise ValueError(f"{path} has neither a pad nor an eos piece to pad with")
    eos_id = processor.eos_id() if processor.eos_id() >= 0 else None
    return TextTokenizer(processor, max_len, pad_id, eos_id, padding_side)


class SiglipSentencePiece:
    """transformers' ``SiglipTokenizer`` pieces on ``sentencepiece`` alone: a
    `TextTokenizer` backend.

    Special tokens in the text stay whole; the rest is canonicalised
    (`canonicalize_text`: lower-cased when `do_lower_case`, ASCII punctuation
    removed, white space collapsed) and encoded. The `TextTokenizer` then
    truncates to ``max_len - 1``, closes with EOS and right-pads: the result
    of ``tokenizer(texts, padding="max_length", truncation=True,
    max_length=max_len)``.
    """

    def __init__(
        self,
        model_file: str | os.PathLike,
        *,
        unk_token: str = "<unk>",
        special_tokens: Sequence[str] = (),
        do_lower_case: bool = True,
        legacy: bool = True,
    ):
        sentencepiece = _sentencepiece()
        processor = sentencepiece.SentencePieceProcessor()
        processor.Load(str(model_file))
        if not legacy:
            # transformers' non-legacy mode turns off the model's dummy-prefix space.
            from sentencepiece import sentencepiece_model_pb2

            proto = sentencepiece_model_pb2.ModelProto.FromString(
                processor.serialized_model_proto()
            )
            if proto.normalizer_spec.add_dummy_prefix:
                proto.normalizer_spec.add_dummy_prefix = False
                processor.LoadFromSerializedProto(proto.SerializeToString())
        self.processor = processor
        self.unk_token = unk_token
        self.do_lower_case = do_lower_case
        self.specials = {t for t in (unk_token, *special_tokens) if t}
        # Longest first, as transformers' trie prefers the longest special token.
        alternatives = sorted(self.specials, key=len, reverse=True)
        self._special_pattern = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")
        self._unk_length = len(processor.encode(unk_token))

    def piece_id(self, token: str, model_file: Any) -> int:
        """The id of a special token, which must be in the vocabulary."""
        if self.processor.piece_to_id(token) == self.processor.unk_id() and token != self.unk_token:
            raise ValueError(f"special token {token!r} is not in {model_file}'s vocabulary")
        return self.processor.piece_to_id(token)

    def _pieces(self, chunk: str) -> list[str]:
        # Encode behind the unknown token and drop it, so sentencepiece keeps the
        # leading "\u2581" (transformers SiglipTokenizer._tokenize).
        text = canonicalize_text(chunk, lower=self.do_lower_case, strip_punctuation=True)
        pieces = self.processor.encode(self.unk_token + text, out_type=str)
        return pieces[self._unk_length :] if len(pieces) >= self._unk_length else pieces

    def _encode_one(self, text: str) -> list[int]:
        text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        pieces: list[str] = []
        for chunk in self._special_pattern.split(text):
            if chunk in self.specials:
                pieces.append(chunk)
            elif chunk:
                pieces.extend(self._pieces(chunk))
        if len(pieces) > 1 and pieces[0] == SPIECE_UNDERLINE and pieces[1] in self.specials:
            pieces = pieces[1:]
        return [self.processor.piece_to_id(piece) for piece in pieces]

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without EOS, truncation or padding."""
        return [self._encode_one(text) for text in texts]

    def get_piece_size(self) -> int:
        return self.processor.get_piece_size()

    def decode(self, ids: Sequence[int]) -> str:
        return self.processor.decode(list(ids))


def _token_content(token: Any) -> str | None:
    """A special token as written in tokenizer_config.json: a string or an AddedToken dict."""
    if isinstance(token, dict):
        return token.get("content")
    return token


def _caption_length(path: pathlib.Path, tok_config: dict[str, Any]) -> int:
    max_len = tok_config.get("model_max_length")
    if max_len is not None and max_len <= 1_000_000:  # above: transformers' "no limit"
        return int(max_len)
    if (path / "config.json").is_file():
        with open(path / "config.json") as f:
            model_config = json.load(f)
        if "text_config" in model_config or model_config.get("model_type") == "siglip":
            text_config = model_config.get("text_config") or {}
            return int(
                text_config.get("max_position_embeddings", TEXT_DEFAULTS["max_position_embeddings"])
            )
        max_len = (model_config.get("text") or {}).get("max_len")  # an aced TwoTowerConfig
        if max_len is not None:
            return int(max_len)
    raise ValueError(f"cannot tell the caption length of {path}; pass max_len=")


def load_hf_tokenizer(directory: str | os.PathLike, max_len: int | None = None) -> TextTokenizer:
    """Load a checkpoint's tokenizer as transformers would, padded to a fixed length.

    Works on a transformers checkpoint and on the output of
    `aced.convert.convert_hf_siglip`, which carries the tokenizer files along.

    A ``SiglipTokenizer`` checkpoint (``spiece.model``; all released SigLIP
    models) is re-implemented on ``sentencepiece`` (`SiglipSentencePiece`);
    otherwise a ``tokenizer.json`` is run through ``tokenizers``, right-padded.

    **Arguments:**

    - `directory`: the checkpoint directory.
    - `max_len`: caption length; default ``model_max_length`` of
      ``tokenizer_config.json``, else the text tower's length from
      ``config.json`` (a transformers or an aced checkpoint).

    **Returns:** a `TextTokenizer`: a list of n captions -> an (n, max_len) int32 array.
    """
    path = pathlib.Path(directory)
    tok_config: dict[str, Any] = {}
    if (path / "tokenizer_config.json").is_file():
        with open(path / "tokenizer_config.json") as f:
            tok_config = json.load(f)
    max_len = _caption_length(path, tok_config) if max_len is None else max_len
    if max_len < 1:
        raise ValueError(f"max_len={max_len} must be >= 1")
    spiece, tokenizer_json = path / "spiece.model", path / "tokenizer.json"
    is_siglip = tok_config.get("tokenizer_class") in (None, "SiglipTokenizer")
    if spiece.is_file() and (is_siglip or not tokenizer_json.is_file()):
        extra = []
        for key in ("additional_special_tokens", "extra_special_tokens", "added_tokens_decoder"):
            tokens = tok_config.get(key) or []
            tokens = tokens.values() if isinstance(tokens, dict) else tokens
            extra += [_token_content(t) for t in tokens]
        eos = _token_content(tok_config.get("eos_token", "</s>"))
        pad = _token_content(tok_config.get("pad_token", "</s>"))
        backend = SiglipSentencePiece(
            spiece,
            unk_token=_token_content(tok_config.get("unk_token", "<unk>")),
            special_tokens=[t for t in (eos, pad, *extra) if t],
            do_lower_case=tok_config.get("do_lower_case", True),
            legacy=tok_config.get("legacy", True),
        )
        eos_id, pad_id = backend.piece_id(eos, spiece), backend.piece_id(pad, spiece)
        return TextTokenizer(backend, int(max_len), pad_id, eos_id, "right")
    if tokenizer_json.is_file():
        return load_tokenizer(
            tokenizer_json,
            max_len=int(max_len),
            padding_side="right",
            pad_token=_token_content(tok_config.get("pad_token")),
        )
    raise FileNotFoundError(f"no spiece.model or tokenizer.json in {path}")
