"""Vision Transformer image tower (big_vision ``vit.py`` / HF ``SiglipVisionModel``).

``patchify -> linear patch embedding -> + position embedding -> pre-LN blocks
-> LayerNorm -> pool ("map" attention pooling or "gap" mean) -> optional
projection head``. Acts on ONE channels-last image; ``vmap`` outside.
"""

import dataclasses

import einops
import equinox as eqx
import jax
import jax.numpy as jnp
from beartype import beartype as typechecker
from jaxtyping import Array, Float, PRNGKeyArray, jaxtyped

from aced.models.flops import attention_flops, encoder_flops, mlp_flops
from aced.models.posemb import posemb_sincos_2d, resample_posemb
from aced.models.transformer import (
    Linear,
    Mlp,
    MultiheadAttention,
    TransformerBlock,
    apply_blocks,
    linear,
    make_blocks,
)
from aced.models.variants import check_positive, decode_variant

POOLS = ("map", "gap")
POSEMBS = ("learn", "sincos2d")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ViTConfig:
    """Hyper-parameters of a `ViT`.

    **Fields:**

    - `image_size`: side of the square input image, divisible by `patch_size`.
    - `patch_size`, `channels`: patch side and input channels.
    - `width`, `depth`, `mlp_dim`, `num_heads`: transformer shape.
    - `pool`: ``"map"`` (multihead attention pooling with a learned probe, as
      SigLIP) or ``"gap"`` (mean over patches).
    - `posemb`: ``"learn"`` (learned, one per patch) or ``"sincos2d"`` (fixed).
    - `out_dim`: width of a final linear projection; ``None`` for none (as HF
      SigLIP's vision tower, whose output is the pooled width itself).
    - `layernorm_eps`: epsilon of every LayerNorm.
    - `scan_layers`: run the blocks in a ``lax.scan`` (False: unrolled).
    """

    image_size: int
    patch_size: int
    channels: int = 3
    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    pool: str = "map"
    posemb: str = "learn"
    out_dim: int | None = None
    layernorm_eps: float = 1e-6
    scan_layers: bool = True

    def __post_init__(self):
        check_positive(
            image_size=self.image_size,
            patch_size=self.patch_size,
            channels=self.channels,
            width=self.width,
            depth=self.depth,
            mlp_dim=self.mlp_dim,
            num_heads=self.num_heads,
        )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} is not divisible by patch_size="
                f"{self.patch_size}; pick an image size that is a multiple of the patch size"
            )
        if self.width % self.num_heads:
            raise ValueError(f"width={self.width} is not divisible by num_heads={self.num_heads}")
        if self.pool not in POOLS:
            raise ValueError(f"pool={self.pool!r} must be one of {POOLS}")
        if self.posemb not in POSEMBS:
            raise ValueError(f"posemb={self.posemb!r} must be one of {POSEMBS}")
        if self.posemb == "sincos2d" and (self.width % 4 or self.width < 8):
            raise ValueError(
                f"posemb='sincos2d' needs width divisible by 4 and >= 8, got width={self.width}"
            )
        if self.out_dim is not None:
            check_positive(out_dim=self.out_dim)
        if not self.layernorm_eps > 0:
            raise ValueError(f"layernorm_eps={self.layernorm_eps} must be > 0")

    @classmethod
    def from_variant(cls, variant: str, *, image_size: int, **overrides) -> "ViTConfig":
        """Config from a variant string such as ``"S/16"`` (see `decode_variant`).

        **Arguments:**

        - `variant`: size and patch, e.g. ``"B/16"``, ``"mu/7"``; without a
          ``/patch`` suffix pass `patch_size` in `overrides`.
        - `image_size`: input image side.
        - `overrides`: any other `ViTConfig` field.

        **Returns:** the `ViTConfig`.
        """
        params = {**decode_variant(variant), **overrides}
        if "patch_size" not in params:
            raise ValueError(
                f"variant {variant!r} names no patch size; write e.g. '{variant}/16' "
                "or pass patch_size="
            )
        return cls(image_size=image_size, **params)

    @property
    def grid_size(self) -> int:
        """Patches along one side of the image."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Tokens the transformer sees: ``grid_size ** 2``."""
        return self.grid_size**2

    @property
    def output_dim(self) -> int:
        """Width of the tower's output vector."""
        return self.width if self.out_dim is None else self.out_dim

    def forward_flops(self) -> int:
        """Analytic forward FLOPs of one image (matrix products; `aced.models.flops`)."""
        patches = self.num_patches
        flops = 2 * patches * (self.patch_size * self.patch_size * self.channels) * self.width
        flops += encoder_flops(patches, self.width, self.depth, self.mlp_dim)
        if self.pool == "map":
            flops += attention_flops(1, patches, self.width) + mlp_flops(
                1, self.width, self.mlp_dim
            )
        if self.out_dim is not None:
            flops += 2 * self.width * self.out_dim
        return flops


@jaxtyped(typechecker=typechecker)
def patchify(image: Float[Array, "H W C"], patch_size: int) -> Float[Array, "P K"]:
    """Cut an image into non-overlapping flattened patches.

    **Arguments:**

    - `image`: one channels-last image, (H, W, C), H and W divisible by
      `patch_size`.
    - `patch_size`: patch side p.

    **Returns:** (P, K) with P = (H/p)(W/p) patches in row-major order and
    K = p * p * C values per patch, ordered (row in patch, column in patch,
    channel).
    """
    return einops.rearrange(
        image, "(h p1) (w p2) c -> (h w) (p1 p2 c)", p1=patch_size, p2=patch_size
    )


class MAPHead(eqx.Module):
    """Multihead attention pooling (big_vision ``MAPHead``, HF
    ``SiglipMultiheadAttentionPoolingHead``): a learned probe attends over the
    tokens, then ``x + MLP(LayerNorm(x))`` on the pooled token."""

    probe: Float[Array, "1 W"]
    attention: MultiheadAttention
    norm: eqx.nn.LayerNorm
    mlp: Mlp

    def __init__(self, width: int, mlp_dim: int, num_heads: int, eps: float, *, key: PRNGKeyArray):
        pkey, akey, mkey = jax.random.split(key, 3)
        self.probe = jax.nn.initializers.xavier_uniform()(pkey, (1, width), jnp.float32)
        self.attention = MultiheadAttention(width, num_heads, key=akey)
        self.norm = eqx.nn.LayerNorm(width, eps=eps)
        self.mlp = Mlp(width, mlp_dim, key=mkey)

    @jaxtyped(typechecker=typechecker)
    def __call__(self, tokens: Float[Array, "T W"]) -> Float[Array, " W"]:
        """Pool (T, W) tokens into one (W,) vector."""
        pooled = self.attention(self.probe, tokens)  # (1, W)
        pooled = pooled + self.mlp(jax.vmap(self.norm)(pooled))
        return pooled[0]


class ViT(eqx.Module):
    """Vision Transformer acting on one channels-last image.

    ``blocks`` holds all transformer blocks stacked along a leading depth axis
    (built with ``eqx.filter_vmap``, run with ``lax.scan``).
    """

    patch_embedding: Linear
    pos_embedding: Float[Array, "P W"] | None
    blocks: TransformerBlock
    norm: eqx.nn.LayerNorm
    map_head: MAPHead | None
    head: Linear | None
    config: ViTConfig = eqx.field(static=True)

    def __init__(self, config: ViTConfig, *, key: PRNGKeyArray):
        ekey, pkey, bkey, mkey, hkey = jax.random.split(key, 5)
        c = config
        patch_dim = c.patch_size * c.patch_size * c.channels
        self.patch_embedding = linear(patch_dim, c.width, key=ekey, weight_init="lecun")
        if c.posemb == "learn":
            self.pos_embedding = (c.width**-0.5) * jax.random.normal(
                pkey, (c.num_patches, c.width), jnp.float32
            )
        else:
            self.pos_embedding = None
        self.blocks = make_blocks(
            c.depth, c.width, c.mlp_dim, c.num_heads, c.layernorm_eps, key=bkey
        )
        self.norm = eqx.nn.LayerNorm(c.width, eps=c.layernorm_eps)
        if c.pool == "map":
            self.map_head = MAPHead(c.width, c.mlp_dim, c.num_heads, c.layernorm_eps, key=mkey)
        else:
            self.map_head = None
        if c.out_dim is None:
            self.head = None
        else:
            self.head = linear(c.width, c.out_dim, key=hkey, weight_init="lecun")
        self.config = config

    @jaxtyped(typechecker=typechecker)
    def __call__(
        self, image: Float[Array, "H W C"], *, flexi: bool = False, tokens: bool = False
    ) -> Float[Array, " W_out"] | Float[Array, "P D"]:
        """Embed one image.

        **Arguments:**

        - `image`: (image_size, image_size, channels), channels-last, already
          normalised.
        - `flexi`: accept a square image of another size, a multiple of the
          patch size: the position embeddings are resampled to its patch grid
          (`resample_posemb`; sin-cos ones are computed for it), as FlexiViT
          does. Cheap scoring (``step.selection.score_image_size``) uses it.
        - `tokens`: return the patch tokens after the final LayerNorm, (P,
          width), before pooling: what a decoder cross-attends to
          (`aced.models.decoder`).

        **Returns:** the (un-normalised) image vector, (out_dim or width,); or
        with `tokens`, the patch tokens.
        """
        c = self.config
        expected = (c.image_size, c.image_size, c.channels)
        size = image.shape[0]
        if flexi and image.shape == (size, size, c.channels) and size % c.patch_size == 0:
            grid = size // c.patch_size
        elif image.shape == expected:
            grid = c.grid_size
        else:
            sizes = "a square image, a multiple of the patch size, " if flexi else ""
            raise ValueError(
                f"image of shape {image.shape} does not match the config's {sizes}{expected}; "
                "resize the images or build the ViTConfig for this size"
            )
        patches = patchify(image, c.patch_size)  # (P, p*p*C)
        # (P, p*p*C) . (p*p*C, W) -> (P, W)
        x = self.patch_embedding(patches)
        if self.pos_embedding is None:
            x = x + posemb_sincos_2d(grid, grid, c.width)
        else:
            x = x + resample_posemb(self.pos_embedding, grid)
        x = apply_blocks(self.blocks, x, scan_layers=c.scan_layers)
        x = jax.vmap(self.norm)(x)
        if tokens:
            return x
        pooled = x.mean(axis=0) if self.map_head is None else self.map_head(x)
        if self.head is None:
            return pooled
        return self.head(pooled)
