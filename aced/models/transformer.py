"""The pre-LN transformer block shared by the image and the text tower.

Every layer acts on ONE sequence ``(T, W)`` (``T`` tokens of either tower,
``W`` hidden width); batching is a ``vmap`` outside. Weights follow the
``(out, in)`` layout of ``Linear`` (the same as PyTorch's
``nn.Linear``) and SigLIP's initialisation (big_vision ``vit.py``, HF
``SiglipPreTrainedModel._init_weights``): Xavier-uniform kernels, zero
attention biases, ``N(0, 1e-6)`` MLP biases.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from beartype import beartype as typechecker
from jaxtyping import Array, Bool, Float, PRNGKeyArray, jaxtyped


class Linear(eqx.Module):
    """``y = x @ weight.T + bias`` with PyTorch's ``(out, in)`` weight layout."""

    weight: Float[Array, "O I"]
    bias: Float[Array, " O"]

    @jaxtyped(typechecker=typechecker)
    def __call__(self, x: Float[Array, "*T I"]) -> Float[Array, "*T O"]:
        """Apply to one vector (I,) or to every row of a sequence (T, I)."""
        # (T, I) . (I, O) -> (T, O): one matmul for the whole sequence.
        y = x @ self.weight.T
        return y + jnp.broadcast_to(self.bias, y.shape)


def linear(
    in_features: int,
    out_features: int,
    *,
    key: PRNGKeyArray,
    weight_init: str = "xavier",
    bias_std: float = 0.0,
) -> Linear:
    """A `Linear` with big_vision's initialisation.

    **Arguments:**

    - `in_features`, `out_features`: input and output widths.
    - `key`: PRNG key.
    - `weight_init`: ``"xavier"`` (uniform; attention and MLP kernels) or
      ``"lecun"`` (normal; patch embedding and projection heads).
    - `bias_std`: standard deviation of the normal bias init (0: zeros).

    **Returns:** the `Linear`.
    """
    wkey, bkey = jax.random.split(key)
    if weight_init == "xavier":
        init = jax.nn.initializers.xavier_uniform(in_axis=-1, out_axis=-2)
    elif weight_init == "lecun":
        init = jax.nn.initializers.lecun_normal(in_axis=-1, out_axis=-2)
    else:
        raise ValueError(f"weight_init={weight_init!r} must be 'xavier' or 'lecun'")
    weight = init(wkey, (out_features, in_features), jnp.float32)
    if bias_std:
        bias = bias_std * jax.random.normal(bkey, (out_features,), jnp.float32)
    else:
        bias = jnp.zeros((out_features,), jnp.float32)
    return Linear(weight=weight, bias=bias)


class MultiheadAttention(eqx.Module):
    """Multi-head dot-product attention with biased q, k, v and output projections.

    Queries come from one sequence, keys and values from another (the same one
    for self-attention; the learned probe and the image tokens in a MAP head).
    """

    q_proj: Linear
    k_proj: Linear
    v_proj: Linear
    out_proj: Linear
    num_heads: int = eqx.field(static=True)

    def __init__(self, width: int, num_heads: int, *, key: PRNGKeyArray):
        if width % num_heads:
            raise ValueError(f"width={width} must be divisible by num_heads={num_heads}")
        qkey, kkey, vkey, okey = jax.random.split(key, 4)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            linear(width, width, key=k, weight_init="xavier", bias_std=0.0)
            for k in (qkey, kkey, vkey, okey)
        )
        self.num_heads = num_heads

    @jaxtyped(typechecker=typechecker)
    def __call__(
        self,
        queries: Float[Array, "Q W"],
        inputs: Float[Array, "T W"] | None = None,
        *,
        mask: Bool[Array, "Q T"] | None = None,
    ) -> Float[Array, "Q W"]:
        """Attend from `queries` (Q tokens) over `inputs` (T tokens).

        **Arguments:**

        - `queries`: the sequence the output is computed for, (Q, W).
        - `inputs`: the sequence attended over, (T, W); None for self-attention
          over `queries` (the same result as passing `queries` twice, with q, k
          and v from one (W, 3W) product).
        - `mask`: which inputs each query may attend to (e.g. causal, for a
          decoder); None: all. Every query must see at least one input.

        **Returns:** the attended sequence, (Q, W).
        """
        heads = self.num_heads
        width = queries.shape[-1]
        head_dim = width // heads
        if inputs is None:
            # (T, W) . (W, 3W) -> (T, 3W): one product reads the input once.
            projection = Linear(
                weight=jnp.concatenate(
                    [self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]
                ),
                bias=jnp.concatenate([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            )
            qkv = projection(queries)
            q, k, v = qkv[:, :width], qkv[:, width : 2 * width], qkv[:, 2 * width :]
        else:
            q, k, v = self.q_proj(queries), self.k_proj(inputs), self.v_proj(inputs)
        # Head-major (h, T, d) operands: the batched products need no transposes
        # inside, which XLA:CPU runs faster than the (T, h, d) layout.
        q, k, v = (_split_heads(x, heads) for x in (q, k, v))
        # (h, Q, d) . (h, T, d) -> (h, Q, T)
        logits = jnp.einsum("hqd,hkd->hqk", q, k) * (head_dim**-0.5)
        if mask is not None:
            logits = jnp.where(mask[None], logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        # (h, Q, T) . (h, T, d) -> (h, Q, d)
        attended = jnp.einsum("hqk,hkd->hqd", weights, v)
        return self.out_proj(attended.transpose(1, 0, 2).reshape(queries.shape[0], width))


def _split_heads(x: Float[Array, "T W"], heads: int) -> Float[Array, "h T d"]:
    # Head-major split of the width, as PyTorch's ``view(..., heads, head_dim)``.
    return x.reshape(x.shape[0], heads, x.shape[1] // heads).transpose(1, 0, 2)


class Mlp(eqx.Module):
    """``fc2(gelu_tanh(fc1(x)))``: the transformer feed-forward block."""

    fc1: Linear
    fc2: Linear

    def __init__(self, width: int, mlp_dim: int, *, key: PRNGKeyArray):
        key1, key2 = jax.random.split(key)
        self.fc1 = linear(width, mlp_dim, key=key1, weight_init="xavier", bias_std=1e-6)
        self.fc2 = linear(mlp_dim, width, key=key2, weight_init="xavier", bias_std=1e-6)

    @jaxtyped(typechecker=typechecker)
    def __call__(self, x: Float[Array, "T W"]) -> Float[Array, "T W"]:
        """Apply the MLP to every token of `x`, (T, W) -> (T, W)."""
        # SigLIP's activation: HF ``gelu_pytorch_tanh`` = the tanh approximation.
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=True))


class TransformerBlock(eqx.Module):
    """Pre-LN encoder block: ``x + MHA(LN(x))``, then ``x + MLP(LN(x))``."""

    norm1: eqx.nn.LayerNorm
    attention: MultiheadAttention
    norm2: eqx.nn.LayerNorm
    mlp: Mlp

    def __init__(self, width: int, mlp_dim: int, num_heads: int, eps: float, *, key: PRNGKeyArray):
        akey, mkey = jax.random.split(key)
        self.norm1 = eqx.nn.LayerNorm(width, eps=eps)
        self.attention = MultiheadAttention(width, num_heads, key=akey)
        self.norm2 = eqx.nn.LayerNorm(width, eps=eps)
        self.mlp = Mlp(width, mlp_dim, key=mkey)

    @jaxtyped(typechecker=typechecker)
    def __call__(self, x: Float[Array, "T W"]) -> Float[Array, "T W"]:
        """Apply the block to one sequence, (T, W) -> (T, W)."""
        x = x + self.attention(jax.vmap(self.norm1)(x))
        return x + self.mlp(jax.vmap(self.norm2)(x))


def make_blocks(
    depth: int, width: int, mlp_dim: int, num_heads: int, eps: float, *, key: PRNGKeyArray
) -> TransformerBlock:
    """Build `depth` blocks stacked along a leading axis, each from its own key.

    **Returns:** one `TransformerBlock` whose every array has a leading axis of
    size `depth`; run it with `apply_blocks`.
    """

    def make_block(block_key: PRNGKeyArray) -> TransformerBlock:
        return TransformerBlock(width, mlp_dim, num_heads, eps, key=block_key)

    return eqx.filter_vmap(make_block)(jax.random.split(key, depth))


def apply_blocks(
    blocks: TransformerBlock, x: Float[Array, "T W"], *, scan_layers: bool = True
) -> Float[Array, "T W"]:
    """Run stacked blocks (from `make_blocks`) in order over one sequence.

    **Arguments:**

    - `blocks`: the stacked blocks.
    - `x`: the input sequence, (T, W).
    - `scan_layers`: compile one block inside a ``lax.scan`` loop (fast
      compilation, the default) or unroll the loop (every block visible to XLA,
      e.g. for ``cost_analysis``, which counts a loop body once).

    **Returns:** the output sequence, (T, W).
    """
    params, static = eqx.partition(blocks, eqx.is_array)
    depth = jax.tree.leaves(params)[0].shape[0]

    def step(h: Float[Array, "T W"], block_params: TransformerBlock):
        return eqx.combine(block_params, static)(h), None

    if scan_layers and jax.default_backend() == "cpu":
        # A differentiated scan stacks every block's residuals for the backward
        # pass; on XLA:CPU filling those stacks (fresh, zeroed buffers, then a copy
        # per block) costs more than recomputing the elementwise ops. Keeping only
        # the projections' and MLP's matmul outputs makes the learner's update
        # faster (the ``update`` part of benchmarks/step.py) and changes no value.
        step = jax.checkpoint(step, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    x, _ = jax.lax.scan(step, x, params, unroll=1 if scan_layers else depth)
    return x
