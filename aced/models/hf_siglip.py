"""Import Hugging Face transformers ``SiglipModel`` checkpoints (their tokenizers:
`aced.data.load_hf_tokenizer`).

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
from collections.abc import Mapping
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


def _encoder(
    state: Mapping[str, np.ndarray], hf: str, aced: str, depth: int
) -> dict[str, np.ndarray]:
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
        raise FileNotFoundError(
            f"{path / 'config.json'} not found; is {path} a SiglipModel checkpoint?"
        )
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
        raise ValueError(
            f"weights not understood by the import (architecture mismatch?): {unused[:5]}"
        )
    skeleton = eqx.filter_eval_shape(TwoTower, config, key=jax.random.key(0))
    return arrays_to_tree(skeleton, arrays)
