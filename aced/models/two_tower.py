"""SigLIP two-tower model (big_vision ``two_towers.py``): a `ViT`, a
`TextEncoder`, and the learned temperature (stored as a log) and bias.

The model embeds and forms pair logits; it never computes a loss.
"""

import dataclasses
import functools
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from beartype import beartype as typechecker
from jaxtyping import Array, Float, Int, PRNGKeyArray, jaxtyped

from aced.models.text import TextConfig, TextEncoder
from aced.models.vit import ViT, ViTConfig

# SigLIP's initialisation (arXiv 2303.15343, Sec. 3.3): t' = log 10, b = -10.
INIT_LOG_TEMPERATURE = math.log(10.0)
INIT_BIAS = -10.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class TwoTowerConfig:
    """An image tower and a text tower whose outputs share one width D."""

    image: ViTConfig
    text: TextConfig

    def __post_init__(self):
        if not isinstance(self.image, ViTConfig) or not isinstance(self.text, TextConfig):
            raise ValueError(
                "TwoTowerConfig needs image=ViTConfig(...) and text=TextConfig(...), got "
                f"{type(self.image).__name__} and {type(self.text).__name__}"
            )
        if self.image.output_dim != self.text.output_dim:
            raise ValueError(
                f"image tower outputs width {self.image.output_dim} but text tower outputs "
                f"{self.text.output_dim}; set out_dim of both towers to the same embedding width"
            )

    @property
    def embed_dim(self) -> int:
        """D, the width of the shared image-text embedding space."""
        return self.image.output_dim

    @classmethod
    def from_variants(
        cls,
        *,
        image_variant: str,
        text_variant: str,
        embed_dim: int,
        image_size: int,
        vocab_size: int,
        max_len: int,
        image_overrides: dict[str, Any] | None = None,
        text_overrides: dict[str, Any] | None = None,
    ) -> "TwoTowerConfig":
        """Both towers from variant strings, each projected to `embed_dim`.

        **Arguments:**

        - `image_variant`: e.g. ``"mu/7"``, ``"B/16"``.
        - `text_variant`: e.g. ``"mu"``, ``"B"``.
        - `embed_dim`: D, the output width of both projection heads.
        - `image_size`: input image side.
        - `vocab_size`, `max_len`: the text tower's vocabulary and length.
        - `image_overrides`, `text_overrides`: other fields of each config
          (e.g. ``{"pool": "gap"}``).

        **Returns:** the `TwoTowerConfig`.
        """
        image = ViTConfig.from_variant(
            image_variant,
            image_size=image_size,
            **{"out_dim": embed_dim, **(image_overrides or {})},
        )
        text = TextConfig.from_variant(
            text_variant,
            vocab_size=vocab_size,
            max_len=max_len,
            **{"out_dim": embed_dim, **(text_overrides or {})},
        )
        return cls(image=image, text=text)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; inverse of `from_dict`."""
        return {"image": dataclasses.asdict(self.image), "text": dataclasses.asdict(self.text)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TwoTowerConfig":
        """Rebuild a config written by `to_dict`."""
        try:
            return cls(image=ViTConfig(**data["image"]), text=TextConfig(**data["text"]))
        except (KeyError, TypeError) as error:
            raise ValueError(
                f"not a TwoTowerConfig dict ({error}); expected keys 'image' and 'text' "
                "holding ViTConfig and TextConfig fields, as written by TwoTowerConfig.to_dict"
            ) from error

    def forward_flops(self, num_tokens: int | None = None) -> int:
        """Analytic forward FLOPs of one image-text pair through both towers (no pair logits)."""
        return self.image.forward_flops() + self.text.forward_flops(num_tokens)


def _l2_normalize(x: Float[Array, "n D"]) -> Float[Array, "n D"]:
    # The floor only guards an all-zero vector (as torch's F.normalize, eps 1e-12).
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.maximum(norm, 1e-12)


# Tokens a CPU embeds at once. XLA:CPU allocates a program's temporaries afresh on
# every call and faults every page in; a whole super-batch's activations also fall
# out of cache between ops. Chunks of about this many tokens run the forward pass
# about twice as fast (benchmarks/step.py, "Step").
CPU_CHUNK_TOKENS = 2048


@jaxtyped(typechecker=typechecker)
def default_batch_size(n: int, tokens_per_example: int) -> int:
    """Examples a tower embeds at once by default: all `n` on accelerators; on CPU,
    chunks of about `CPU_CHUNK_TOKENS` tokens."""
    if jax.default_backend() != "cpu":
        return n
    return max(1, min(n, CPU_CHUNK_TOKENS // tokens_per_example))


def _embed(tower, inputs: Array, batch_size: int) -> Float[Array, "n D"]:
    # lax.map runs ceil(n / batch_size) chunks, each a vmap over its examples; the
    # remainder, if any, is one more vmap. Every example's result is the same.
    if batch_size >= inputs.shape[0]:
        return _l2_normalize(jax.vmap(tower)(inputs))
    return _l2_normalize(jax.lax.map(tower, inputs, batch_size=batch_size))


class TwoTower(eqx.Module):
    """SigLIP image-text model: two towers, log-temperature and bias."""

    image: ViT
    text: TextEncoder
    log_temperature: Float[Array, ""]
    bias: Float[Array, ""]
    config: TwoTowerConfig = eqx.field(static=True)

    def __init__(self, config: TwoTowerConfig, *, key: PRNGKeyArray):
        ikey, tkey = jax.random.split(key)
        self.image = ViT(config.image, key=ikey)
        self.text = TextEncoder(config.text, key=tkey)
        self.log_temperature = jnp.asarray(INIT_LOG_TEMPERATURE, jnp.float32)
        self.bias = jnp.asarray(INIT_BIAS, jnp.float32)
        self.config = config

    @property
    def temperature(self) -> Float[Array, ""]:
        """t = exp(log_temperature), the factor on cosine similarities."""
        return jnp.exp(self.log_temperature)

    @jaxtyped(typechecker=typechecker)
    def embed_images(
        self,
        images: Float[Array, "n H W C"],
        *,
        batch_size: int | None = None,
        flexi: bool = False,
    ) -> Float[Array, "n D"]:
        """L2-normalised image embeddings of a batch of channels-last images.

        **Arguments:**

        - `images`: (n, H, W, C), already normalised.
        - `batch_size`: images embedded at once, in a loop over chunks; None:
          `default_batch_size` (all on accelerators, cache-sized chunks on CPU).
          The result does not depend on it beyond float rounding.
        - `flexi`: images may be of another size, a multiple of the patch size
          (`aced.models.ViT`, ``flexi``).

        **Returns:** (n, D), unit rows.
        """
        if batch_size is None:
            patches = (images.shape[1] // self.config.image.patch_size) ** 2
            batch_size = default_batch_size(images.shape[0], patches)
        tower = functools.partial(self.image, flexi=True) if flexi else self.image
        return _embed(tower, images, batch_size)

    @jaxtyped(typechecker=typechecker)
    def embed_texts(
        self, tokens: Int[Array, "n L"], *, batch_size: int | None = None
    ) -> Float[Array, "n D"]:
        """L2-normalised text embeddings of a batch of token rows.

        **Arguments:**

        - `tokens`: (n, L) int token ids.
        - `batch_size`: rows embedded at once, as for `embed_images`.

        **Returns:** (n, D), unit rows.
        """
        if batch_size is None:
            batch_size = default_batch_size(tokens.shape[0], tokens.shape[1])
        return _embed(self.text, tokens, batch_size)

    @jaxtyped(typechecker=typechecker)
    def logits(
        self, images: Float[Array, "n H W C"], tokens: Int[Array, "m L"]
    ) -> Float[Array, "n m"]:
        """Pair logits ``t * zimg @ ztxt.T + b``; entry (i, j) pairs image i with text j."""
        zimg = self.embed_images(images)
        ztxt = self.embed_texts(tokens)
        # (n, D) . (D, m) -> (n, m)
        return self.temperature * (zimg @ ztxt.T) + self.bias
