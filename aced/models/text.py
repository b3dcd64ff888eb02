"""Text tower (big_vision ``text_transformer.py`` / HF ``SiglipTextModel``).

``token + learned position embeddings -> bidirectional pre-LN blocks (the
same block as the ViT) -> LayerNorm -> pool (last token or mean) ->
projection``. Acts on ONE token row; ``vmap`` outside.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
from beartype import beartype as typechecker
from jaxtyping import Array, Float, Int, PRNGKeyArray, jaxtyped

from aced.models.flops import encoder_flops
from aced.models.transformer import Linear, TransformerBlock, apply_blocks, linear, make_blocks
from aced.models.variants import check_positive, decode_variant

TEXT_POOLS = ("last", "mean")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextConfig:
    """Hyper-parameters of a `TextEncoder`.

    **Fields:**

    - `vocab_size`: number of token ids.
    - `max_len`: number of learned positions; token rows may be shorter.
    - `width`, `depth`, `mlp_dim`, `num_heads`: transformer shape.
    - `pool`: ``"last"`` (hidden state at position L-1, as SigLIP: captions
      are padded to a fixed length, no attention mask) or ``"mean"``.
    - `out_dim`: width of the final linear projection; ``None`` for none.
    - `layernorm_eps`: epsilon of every LayerNorm.
    - `scan_layers`: run the blocks in a ``lax.scan`` (False: unrolled).
    """

    vocab_size: int
    max_len: int
    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    pool: str = "last"
    out_dim: int | None = None
    layernorm_eps: float = 1e-6
    scan_layers: bool = True

    def __post_init__(self):
        check_positive(
            vocab_size=self.vocab_size,
            max_len=self.max_len,
            width=self.width,
            depth=self.depth,
            mlp_dim=self.mlp_dim,
            num_heads=self.num_heads,
        )
        if self.width % self.num_heads:
            raise ValueError(f"width={self.width} is not divisible by num_heads={self.num_heads}")
        if self.pool not in TEXT_POOLS:
            raise ValueError(f"pool={self.pool!r} must be one of {TEXT_POOLS}")
        if self.out_dim is not None:
            check_positive(out_dim=self.out_dim)
        if not self.layernorm_eps > 0:
            raise ValueError(f"layernorm_eps={self.layernorm_eps} must be > 0")

    @classmethod
    def from_variant(
        cls, variant: str, *, vocab_size: int, max_len: int, **overrides
    ) -> "TextConfig":
        """Config from a size name such as ``"S"`` (see `decode_variant`).

        **Arguments:**

        - `variant`: a size without patch suffix, e.g. ``"mu"``, ``"B"``.
        - `vocab_size`, `max_len`: vocabulary and maximum caption length.
        - `overrides`: any other `TextConfig` field.

        **Returns:** the `TextConfig`.
        """
        params = decode_variant(variant)
        if "patch_size" in params:
            raise ValueError(f"text variant {variant!r} has a patch size; drop the '/...' suffix")
        return cls(vocab_size=vocab_size, max_len=max_len, **{**params, **overrides})

    @property
    def output_dim(self) -> int:
        """Width of the tower's output vector."""
        return self.width if self.out_dim is None else self.out_dim

    def forward_flops(self, num_tokens: int | None = None) -> int:
        """Analytic forward FLOPs of one token row (length `num_tokens`, default `max_len`)."""
        length = self.max_len if num_tokens is None else num_tokens
        if not 0 < length <= self.max_len:
            raise ValueError(f"num_tokens={length} must be in [1, max_len={self.max_len}]")
        flops = encoder_flops(length, self.width, self.depth, self.mlp_dim)
        if self.out_dim is not None:
            flops += 2 * self.width * self.out_dim
        return flops


class TextEncoder(eqx.Module):
    """Bidirectional transformer text tower acting on one token row."""

    token_embedding: Float[Array, "V W"]
    pos_embedding: Float[Array, "Lmax W"]
    blocks: TransformerBlock
    norm: eqx.nn.LayerNorm
    head: Linear | None
    config: TextConfig = eqx.field(static=True)

    def __init__(self, config: TextConfig, *, key: PRNGKeyArray):
        tkey, pkey, bkey, hkey = jax.random.split(key, 4)
        c = config
        scale = c.width**-0.5
        self.token_embedding = scale * jax.random.normal(tkey, (c.vocab_size, c.width), jnp.float32)
        self.pos_embedding = scale * jax.random.normal(pkey, (c.max_len, c.width), jnp.float32)
        self.blocks = make_blocks(
            c.depth, c.width, c.mlp_dim, c.num_heads, c.layernorm_eps, key=bkey
        )
        self.norm = eqx.nn.LayerNorm(c.width, eps=c.layernorm_eps)
        if c.out_dim is None:
            self.head = None
        else:
            self.head = linear(c.width, c.out_dim, key=hkey, weight_init="lecun")
        self.config = config

    @jaxtyped(typechecker=typechecker)
    def __call__(self, tokens: Int[Array, " L"]) -> Float[Array, " D"]:
        """Embed one token row.

        **Arguments:**

        - `tokens`: (L,) int token ids, L <= max_len, padded as the tokenizer
          does (last-token pooling reads position L-1).

        **Returns:** the (un-normalised) text vector, (out_dim or width,).
        """
        length = tokens.shape[0]
        if length > self.config.max_len:
            raise ValueError(
                f"{length} tokens exceed max_len={self.config.max_len}; truncate the "
                "captions or build the TextConfig with a larger max_len"
            )
        x = self.token_embedding[tokens] + self.pos_embedding[:length]  # (L, W)
        x = apply_blocks(self.blocks, x, scan_layers=self.config.scan_layers)
        x = jax.vmap(self.norm)(x)
        pooled = x[-1] if self.config.pool == "last" else x.mean(axis=0)
        if self.head is None:
            return pooled
        return self.head(pooled)
