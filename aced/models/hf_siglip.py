"""Import Hugging Face transformers ``SiglipModel`` checkpoints (and their tokenizers).

A checkpoint directory (e.g. ``google/siglip-so400m-patch14-384`` downloaded
with ``huggingface-cli download``) holds ``config.json``, the weights in
``model.safetensors`` (or shards listed in ``model.safetensors.index.json``)
and tokenizer files. Weights are read with safetensors into numpy; nothing is
unpickled and torch is not needed.

Architecture correspondence (transformers ``modeling_siglip.py`` -> aced):

- vision: ``Conv2d`` patch embedding (out, C, p, p) -> `Linear` over
  einops-flattened ``(p1 p2 c)`` patches; learned position embeddings; pre-LN
  encoder layers; ``post_layernorm``; ``SiglipMultiheadAttentionPoolingHead``
  -> `MAPHead` (``nn.MultiheadAttention``'s packed ``in_proj`` split into q,
  k, v). No projection after the pooling head.
- text: token + position embeddings, encoder layers, ``final_layer_norm``,
  last-token pooling, ``head`` projection to ``projection_size``.
- ``logit_scale`` is already the log-temperature, ``logit_bias`` the bias.
"""

import json
import os
import pathlib
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import numpy as np
from safetensors.numpy import load_file

from aced.models.serialization import arrays_to_tree
from aced.models.text import TextConfig
from aced.models.two_tower import TwoTower, TwoTowerConfig
from aced.models.vit import ViTConfig

# Defaults of transformers' SiglipTextConfig / SiglipVisionConfig: released
# config.json files omit keys that equal them.
TEXT_DEFAULTS = {
    "vocab_size": 32000,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 64,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "projection_size": None,
}
VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "vision_use_head": True,
}
# The tanh approximation of GELU under its transformers names; aced's MLP uses it.
TANH_GELU = ("gelu_pytorch_tanh", "gelu_new")
# Tokenizer files a converted checkpoint carries along (config.json is the model's).
TOKENIZER_FILES = (
    "spiece.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


def _square(value: Any, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(
                f"{name}={value} is not square; aced supports square images and patches only"
            )
        value = value[0]
    return int(value)


def hf_siglip_config(hf_config: Mapping[str, Any]) -> TwoTowerConfig:
    """The aced `TwoTowerConfig` of a transformers ``SiglipConfig`` dict.

    Refuses, with a clear error, options aced does not implement: another
    ``model_type`` (e.g. ``siglip2``), activations other than tanh-GELU,
    ``vision_use_head=False``, non-square images or patches, a text
    ``projection_size`` other than the vision width.

    **Arguments:**

    - `hf_config`: the parsed ``config.json``; missing keys take transformers'
      defaults, as transformers itself does.

    **Returns:** the `TwoTowerConfig` (MAP pooling, learned position
    embeddings, no image projection, last-token text pooling).
    """
    model_type = hf_config.get("model_type")
    if model_type != "siglip":
        raise ValueError(
            f"config.json has model_type={model_type!r}; only transformers 'siglip' "
            "(SiglipModel) checkpoints can be imported"
        )
    text = {**TEXT_DEFAULTS, **(hf_config.get("text_config") or {})}
    vision = {**VISION_DEFAULTS, **(hf_config.get("vision_config") or {})}
    for tower, cfg in (("text", text), ("vision", vision)):
        if cfg["hidden_act"] not in TANH_GELU:
            raise ValueError(
                f"{tower}_config.hidden_act={cfg['hidden_act']!r} is not supported; aced's "
                f"MLP uses the tanh-approximated GELU ({' / '.join(TANH_GELU)})"
            )
    if not vision["vision_use_head"]:
        raise ValueError(
            "vision_config.vision_use_head=False is not supported: SiglipModel then has no "
            "pooled image embedding; use a checkpoint with the attention-pooling head"
        )
    image = ViTConfig(
        image_size=_square(vision["image_size"], "vision_config.image_size"),
        patch_size=_square(vision["patch_size"], "vision_config.patch_size"),
        channels=vision["num_channels"],
        width=vision["hidden_size"],
        depth=vision["num_hidden_layers"],
        mlp_dim=vision["intermediate_size"],
        num_heads=vision["num_attention_heads"],
        pool="map",
        posemb="learn",
        out_dim=None,
        layernorm_eps=float(vision["layer_norm_eps"]),
    )
    projection = text["projection_size"] or text["hidden_size"]
    text_config = TextConfig(
        vocab_size=text["vocab_size"],
        max_len=text["max_position_embeddings"],
        width=text["hidden_size"],
        depth=text["num_hidden_layers"],
        mlp_dim=text["intermediate_size"],
        num_heads=text["num_attention_heads"],
        pool="last",
        out_dim=projection,
        layernorm_eps=float(text["layer_norm_eps"]),
    )
    if image.output_dim != text_config.output_dim:
        raise ValueError(
            f"vision hidden_size={image.output_dim} differs from text projection_size="
            f"{text_config.output_dim}: the image and text embeddings cannot be compared"
        )
    return TwoTowerConfig(image=image, text=text_config)


def _linear(state: Mapping[str, np.ndarray], hf: str, aced: str) -> dict[str, np.ndarray]:
    return {f"{aced}.weight": state[f"{hf}.weight"], f"{aced}.bias": state[f"{hf}.bias"]}


def _encoder(state: Mapping[str, np.ndarray], hf: str, aced: str, depth: int) -> dict[str, np.ndarray]:
    """HF ``encoder.layers.{i}`` -> aced stacked blocks (leading depth axis)."""
    names = {
        "layer_norm1": "norm1",
        "self_attn.q_proj": "attention.q_proj",
        "self_attn.k_proj": "attention.k_proj",
        "self_attn.v_proj": "attention.v_proj",
        "self_attn.out_proj": "attention.out_proj",
        "layer_norm2": "norm2",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    out = {}
    for hf_name, aced_name in names.items():
        for param in ("weight", "bias"):
            layers = [state[f"{hf}.encoder.layers.{i}.{hf_name}.{param}"] for i in range(depth)]
            out[f"{aced}.blocks.{aced_name}.{param}"] = np.stack(layers)
    return out


def hf_siglip_arrays(
    state: Mapping[str, np.ndarray], config: TwoTowerConfig
) -> dict[str, np.ndarray]:
    """Rename and reshape a ``SiglipModel`` state dict into aced path-named arrays.

    **Arguments:**

    - `state`: ``{transformers parameter name: numpy array}``.
    - `config`: the `TwoTowerConfig` from `hf_siglip_config`.

    **Returns:** arrays named as `aced.models.serialization.tree_to_arrays`
    names the leaves of the corresponding `TwoTower`.
    """
    v, t = "vision_model", "text_model"
    width = config.image.width
    arrays: dict[str, np.ndarray] = {}
    # Conv kernel (W, C, p1, p2) -> (W, p1 p2 c), the order `patchify` flattens in.
    conv = state[f"{v}.embeddings.patch_embedding.weight"]
    arrays["image.patch_embedding.weight"] = conv.transpose(0, 2, 3, 1).reshape(conv.shape[0], -1)
    arrays["image.patch_embedding.bias"] = state[f"{v}.embeddings.patch_embedding.bias"]
    arrays["image.pos_embedding"] = state[f"{v}.embeddings.position_embedding.weight"]
    arrays.update(_encoder(state, v, "image", config.image.depth))
    arrays.update(_linear(state, f"{v}.post_layernorm", "image.norm"))
    head = f"{v}.head"
    arrays["image.map_head.probe"] = state[f"{head}.probe"].reshape(1, width)
    # nn.MultiheadAttention packs q, k, v projections row-wise into in_proj.
    in_weight = state[f"{head}.attention.in_proj_weight"]
    in_bias = state[f"{head}.attention.in_proj_bias"]
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        rows = slice(i * width, (i + 1) * width)
        arrays[f"image.map_head.attention.{name}.weight"] = in_weight[rows]
        arrays[f"image.map_head.attention.{name}.bias"] = in_bias[rows]
    arrays.update(_linear(state, f"{head}.attention.out_proj", "image.map_head.attention.out_proj"))
    arrays.update(_linear(state, f"{head}.layernorm", "image.map_head.norm"))
    arrays.update(_linear(state, f"{head}.mlp.fc1", "image.map_head.mlp.fc1"))
    arrays.update(_linear(state, f"{head}.mlp.fc2", "image.map_head.mlp.fc2"))

    arrays["text.token_embedding"] = state[f"{t}.embeddings.token_embedding.weight"]
    arrays["text.pos_embedding"] = state[f"{t}.embeddings.position_embedding.weight"]
    arrays.update(_encoder(state, t, "text", config.text.depth))
    arrays.update(_linear(state, f"{t}.final_layer_norm", "text.norm"))
    arrays.update(_linear(state, f"{t}.head", "text.head"))

    arrays["log_temperature"] = state["logit_scale"].reshape(())
    arrays["bias"] = state["logit_bias"].reshape(())
    return {name: np.asarray(a, dtype=np.float32) for name, a in arrays.items()}


def _read_safetensors(directory: pathlib.Path) -> dict[str, np.ndarray]:
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(load_file(str(directory / shard)))
        return state
    raise FileNotFoundError(
        f"no model.safetensors (or model.safetensors.index.json) in {directory}; download the "
        "safetensors weights (pytorch_model.bin is not read: aced never unpickles)"
    )


class _ReadTracker(dict):
    """A state dict that records which names were read."""

    def __init__(self, state: Mapping[str, np.ndarray]):
        super().__init__(state)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> np.ndarray:
        self.read.add(name)
        return super().__getitem__(name)


def from_hf_siglip(directory: str | os.PathLike) -> TwoTower:
    """Build the aced `TwoTower` equivalent to a transformers ``SiglipModel`` checkpoint.

    **Arguments:**

    - `directory`: a ``SiglipModel`` checkpoint directory with ``config.json``
      and safetensors weights (as written by ``save_pretrained`` or downloaded
      from the Hugging Face Hub).

    **Returns:** the `TwoTower` (float32), whose `embed_images` on NHWC images
    and `embed_texts` equal transformers' normalised ``image_embeds`` /
    ``text_embeds`` on the same NCHW images and input ids.
    """
    path = pathlib.Path(directory)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path / 'config.json'} not found; is {path} a SiglipModel checkpoint?")
    with open(path / "config.json") as f:
        config = hf_siglip_config(json.load(f))
    state = _ReadTracker(_read_safetensors(path))
    try:
        arrays = hf_siglip_arrays(state, config)
    except KeyError as error:
        raise ValueError(
            f"{path} lacks the weight {error}; is it a full SiglipModel (not a vision- or "
            "text-only model)?"
        ) from error
    # position_ids are index buffers some older checkpoints saved, not weights.
    unused = sorted(k for k in set(state) - state.read if not k.endswith("position_ids"))
    if unused:
        raise ValueError(f"weights not understood by the import (architecture mismatch?): {unused[:5]}")
    skeleton = eqx.filter_eval_shape(TwoTower, config, key=jax.random.key(0))
    return arrays_to_tree(skeleton, arrays)


# ---------------------------------------------------------------------------
# Tokenizers


SPIECE_UNDERLINE = "\u2581"


def _token_content(token: Any) -> str | None:
    """A special token as written in tokenizer_config.json: a string or an AddedToken dict."""
    if isinstance(token, dict):
        return token.get("content")
    return token


class SiglipSentencePieceTokenizer:
    """transformers' ``SiglipTokenizer`` re-implemented on ``sentencepiece`` alone.

    Captions are canonicalised as big_vision does (lower-cased, ASCII
    punctuation removed, whitespace collapsed), encoded, truncated to
    ``max_len - 1`` tokens, closed with EOS and right-padded to `max_len`:
    the result of ``tokenizer(texts, padding="max_length", truncation=True,
    max_length=max_len)``.
    """

    def __init__(
        self,
        model_file: str | os.PathLike,
        *,
        max_len: int,
        eos_token: str = "</s>",
        unk_token: str = "<unk>",
        pad_token: str = "</s>",
        extra_special_tokens: Sequence[str] = (),
        do_lower_case: bool = True,
        legacy: bool = True,
    ):
        import sentencepiece as spm

        if max_len < 1:
            raise ValueError(f"max_len={max_len} must be >= 1")
        processor = spm.SentencePieceProcessor()
        processor.Load(str(model_file))
        if not legacy:
            # transformers' non-legacy mode turns off the model's dummy-prefix space.
            from sentencepiece import sentencepiece_model_pb2

            proto = sentencepiece_model_pb2.ModelProto.FromString(processor.serialized_model_proto())
            if proto.normalizer_spec.add_dummy_prefix:
                proto.normalizer_spec.add_dummy_prefix = False
                processor.LoadFromSerializedProto(proto.SerializeToString())
        self.processor = processor
        self.max_len = max_len
        self.unk_token = unk_token
        self.do_lower_case = do_lower_case
        self.specials = {t for t in (eos_token, unk_token, pad_token, *extra_special_tokens) if t}
        for token in (eos_token, pad_token):
            if processor.piece_to_id(token) == processor.unk_id() and token != unk_token:
                raise ValueError(f"special token {token!r} is not in {model_file}'s vocabulary")
        self.eos_id = processor.piece_to_id(eos_token)
        self.pad_id = processor.piece_to_id(pad_token)
        self.vocab_size = processor.get_piece_size()
        # Longest first, as transformers' trie prefers the longest special token.
        alternatives = sorted(self.specials, key=len, reverse=True)
        self._special_pattern = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")
        self._unk_length = len(processor.encode(unk_token))

    def _canonicalize(self, text: str) -> str:
        # big_vision prompt_engineering / transformers SiglipTokenizer.canonicalize_text.
        if self.do_lower_case:
            text = text.lower()
        text = text.translate(str.maketrans("", "", string.punctuation))
        return re.sub(r"\s+", " ", text).strip()

    def _pieces(self, chunk: str) -> list[str]:
        # Encode behind the unknown token and drop it, so sentencepiece keeps the
        # leading "\u2581" (transformers SiglipTokenizer._tokenize).
        pieces = self.processor.encode(self.unk_token + self._canonicalize(chunk), out_type=str)
        return pieces[self._unk_length :] if len(pieces) >= self._unk_length else pieces

    def encode(self, text: str) -> list[int]:
        """Token ids of one caption, without EOS, truncation or padding."""
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

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Tokenise captions into an (n, max_len) int32 array."""
        if isinstance(texts, str):
            raise TypeError("pass a list of captions, not one string")
        out = np.full((len(texts), self.max_len), self.pad_id, np.int32)
        for row, text in enumerate(texts):
            ids = self.encode(text)[: self.max_len - 1]
            if not ids or ids[-1] != self.eos_id:
                ids.append(self.eos_id)
            out[row, : len(ids)] = ids
        return out


class TokenizersJsonTokenizer:
    """A ``tokenizer.json`` pipeline (``tokenizers``), truncated and padded to `max_len`.

    Equals transformers' fast tokenizer on the same file with
    ``padding="max_length", truncation=True, max_length=max_len``.
    """

    def __init__(self, tokenizer_file: str | os.PathLike, *, max_len: int, pad_token: str | None):
        from tokenizers import Tokenizer

        if max_len < 1:
            raise ValueError(f"max_len={max_len} must be >= 1")
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        if pad_token is None and tokenizer.padding is not None:
            pad_token = tokenizer.padding["pad_token"]
        if pad_token is None or tokenizer.token_to_id(pad_token) is None:
            raise ValueError(
                f"{tokenizer_file} defines no usable pad token ({pad_token!r}); set pad_token in "
                "tokenizer_config.json"
            )
        self.pad_id = tokenizer.token_to_id(pad_token)
        tokenizer.enable_truncation(max_len)
        tokenizer.enable_padding(length=max_len, pad_id=self.pad_id, pad_token=pad_token)
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.vocab_size = tokenizer.get_vocab_size()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Tokenise captions into an (n, max_len) int32 array."""
        if isinstance(texts, str):
            raise TypeError("pass a list of captions, not one string")
        encodings = self.tokenizer.encode_batch(list(texts))
        return np.asarray([e.ids for e in encodings], np.int32).reshape(len(texts), self.max_len)


def load_hf_tokenizer(
    directory: str | os.PathLike, max_len: int | None = None
) -> SiglipSentencePieceTokenizer | TokenizersJsonTokenizer:
    """Load a checkpoint's tokenizer as transformers would, padded to a fixed length.

    Works on a transformers checkpoint and on the output of
    `aced.convert.convert_hf_siglip`, which carries the tokenizer files along.

    A ``SiglipTokenizer`` checkpoint (``spiece.model``; all released SigLIP
    models) is re-implemented on ``sentencepiece``; otherwise a
    ``tokenizer.json`` is run through ``tokenizers``.

    **Arguments:**

    - `directory`: the checkpoint directory.
    - `max_len`: caption length; default ``model_max_length`` of
      ``tokenizer_config.json``, else the text tower's length from
      ``config.json`` (a transformers or an aced checkpoint).

    **Returns:** a callable mapping a list of n captions to an (n, max_len)
    int32 array.
    """
    path = pathlib.Path(directory)
    tok_config: dict[str, Any] = {}
    if (path / "tokenizer_config.json").is_file():
        with open(path / "tokenizer_config.json") as f:
            tok_config = json.load(f)
    if max_len is None:
        max_len = tok_config.get("model_max_length")
        if max_len is None or max_len > 1_000_000:  # transformers' "no limit" sentinel
            max_len = None
            if (path / "config.json").is_file():
                with open(path / "config.json") as f:
                    model_config = json.load(f)
                if "text_config" in model_config or model_config.get("model_type") == "siglip":
                    text_config = model_config.get("text_config") or {}
                    max_len = text_config.get(
                        "max_position_embeddings", TEXT_DEFAULTS["max_position_embeddings"]
                    )
                else:  # an aced checkpoint (TwoTowerConfig.to_dict)
                    max_len = (model_config.get("text") or {}).get("max_len")
        if max_len is None:
            raise ValueError(f"cannot tell the caption length of {path}; pass max_len=")
    tokenizer_class = tok_config.get("tokenizer_class")
    spiece = path / "spiece.model"
    tokenizer_json = path / "tokenizer.json"
    is_siglip = tokenizer_class in (None, "SiglipTokenizer")
    if spiece.is_file() and (is_siglip or not tokenizer_json.is_file()):
        extra = []
        for key in ("additional_special_tokens", "extra_special_tokens", "added_tokens_decoder"):
            tokens = tok_config.get(key) or []
            tokens = tokens.values() if isinstance(tokens, dict) else tokens
            extra += [_token_content(t) for t in tokens]
        return SiglipSentencePieceTokenizer(
            spiece,
            max_len=int(max_len),
            eos_token=_token_content(tok_config.get("eos_token", "</s>")),
            unk_token=_token_content(tok_config.get("unk_token", "<unk>")),
            pad_token=_token_content(tok_config.get("pad_token", "</s>")),
            extra_special_tokens=[t for t in extra if t],
            do_lower_case=tok_config.get("do_lower_case", True),
            legacy=tok_config.get("legacy", True),
        )
    if tokenizer_json.is_file():
        return TokenizersJsonTokenizer(
            tokenizer_json, max_len=int(max_len), pad_token=_token_content(tok_config.get("pad_token"))
        )
    raise FileNotFoundError(f"no spiece.model or tokenizer.json in {path}")
