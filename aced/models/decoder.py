"""LiT-Decoder's text decoder: an autoregressive transformer over a frozen image encoder.

A small pre-LN decoder, single-example like the towers: each block is causal
self-attention, cross-attention to the encoder's patch tokens (``ViT(image,
tokens=True)``, projected to the decoder's width once), then an MLP. Trained by
teacher forcing (`teacher_forcing_loss`: the target shifted right behind a
begin token, cross-entropy on every real target token); decoded to a fixed
length, greedily (`greedy_decode`) or by beam search (`beam_search`), both
jit-compatible and ending each sequence at its end token. A task prompt (a
question, "describe the image") is a prefix of the sequence: teacher forcing
leaves it out of the loss (`answer_mask`), decoding copies it (`prompt`).
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
from beartype import beartype as typechecker
from jaxtyping import Array, Float, Int, PRNGKeyArray, jaxtyped

from aced.models.transformer import Linear, Mlp, MultiheadAttention, linear
from aced.models.variants import check_positive


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecoderConfig:
    """Shape of a `TextDecoder`.

    - `vocab_size`, `max_len`: output vocabulary and longest sequence.
    - `width`, `depth`, `mlp_dim`, `num_heads`: transformer shape.
    - `encoder_width`: width of the encoder's tokens (the ViT's ``width``).
    - `bos_id`, `eos_id`, `pad_id`: begin, end and padding tokens.
    """

    vocab_size: int
    max_len: int
    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    encoder_width: int
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = 0
    layernorm_eps: float = 1e-6

    def __post_init__(self):
        check_positive(vocab_size=self.vocab_size, max_len=self.max_len, width=self.width,
                       depth=self.depth, mlp_dim=self.mlp_dim, num_heads=self.num_heads,
                       encoder_width=self.encoder_width)  # fmt: skip
        ids = {"bos_id": self.bos_id, "eos_id": self.eos_id, "pad_id": self.pad_id}
        for name, value in ids.items():
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"DecoderConfig.{name}={value} outside the vocabulary")
        if len(set(ids.values())) < 3:
            raise ValueError(f"DecoderConfig: bos, eos and pad ids must differ, got {ids}")


class DecoderBlock(eqx.Module):
    """``x + SelfAttn(LN(x), causal)``, ``x + CrossAttn(LN(x), memory)``, ``x + MLP(LN(x))``."""

    norm1: eqx.nn.LayerNorm
    self_attention: MultiheadAttention
    norm2: eqx.nn.LayerNorm
    cross_attention: MultiheadAttention
    norm3: eqx.nn.LayerNorm
    mlp: Mlp

    def __init__(self, width: int, mlp_dim: int, num_heads: int, eps: float, *, key: PRNGKeyArray):
        skey, ckey, mkey = jax.random.split(key, 3)
        self.norm1, self.norm2, self.norm3 = (eqx.nn.LayerNorm(width, eps=eps) for _ in range(3))
        self.self_attention = MultiheadAttention(width, num_heads, key=skey)
        self.cross_attention = MultiheadAttention(width, num_heads, key=ckey)
        self.mlp = Mlp(width, mlp_dim, key=mkey)

    @jaxtyped(typechecker=typechecker)
    def __call__(self, x: Float[Array, "L W"], memory: Float[Array, "P W"]) -> Float[Array, "L W"]:
        causal = jnp.tril(jnp.ones((x.shape[0], x.shape[0]), bool))
        x = x + self.self_attention(jax.vmap(self.norm1)(x), mask=causal)
        x = x + self.cross_attention(jax.vmap(self.norm2)(x), memory)
        return x + self.mlp(jax.vmap(self.norm3)(x))


class TextDecoder(eqx.Module):
    """Next-token logits of a token sequence, conditioned on an image's patch tokens."""

    token_embedding: Float[Array, "V W"]
    pos_embedding: Float[Array, "L W"]
    memory_proj: Linear
    blocks: tuple[DecoderBlock, ...]
    norm: eqx.nn.LayerNorm
    head: Linear
    config: DecoderConfig = eqx.field(static=True)

    def __init__(self, config: DecoderConfig, *, key: PRNGKeyArray):
        c = config
        tkey, pkey, mkey, hkey, *bkeys = jax.random.split(key, 4 + c.depth)
        self.token_embedding = 0.02 * jax.random.normal(tkey, (c.vocab_size, c.width))
        self.pos_embedding = 0.02 * jax.random.normal(pkey, (c.max_len, c.width))
        self.memory_proj = linear(c.encoder_width, c.width, key=mkey, weight_init="xavier")
        self.blocks = tuple(
            DecoderBlock(c.width, c.mlp_dim, c.num_heads, c.layernorm_eps, key=k) for k in bkeys
        )
        self.norm = eqx.nn.LayerNorm(c.width, eps=c.layernorm_eps)
        self.head = linear(c.width, c.vocab_size, key=hkey, weight_init="xavier")
        self.config = config

    @jaxtyped(typechecker=typechecker)
    def __call__(
        self, tokens: Int[Array, " L"], memory: Float[Array, "P E"]
    ) -> Float[Array, "L V"]:
        """Logits of the next token at every position of `tokens` (L <= max_len), given the
        encoder's tokens `memory` (P, encoder_width)."""
        if tokens.shape[0] > self.config.max_len:
            raise ValueError(f"{tokens.shape[0]} tokens exceed max_len={self.config.max_len}")
        x = self.token_embedding[tokens] + self.pos_embedding[: tokens.shape[0]]
        memory = self.memory_proj(memory)
        for block in self.blocks:
            x = block(x, memory)
        return self.head(jax.vmap(self.norm)(x))


def shift_right(target: Int[Array, " L"], bos_id: int) -> Int[Array, " L"]:
    """The decoder's input for `target`: begin token, then the target without its last token."""
    return jnp.concatenate([jnp.array([bos_id], target.dtype), target[:-1]])


def answer_mask(target: Int[Array, " L"], prompt_len: Int[Array, ""] | int, pad_id: int):
    """1.0 on the target's tokens after its first `prompt_len` (the prompt), 0 on padding."""
    positions = jnp.arange(target.shape[0])
    return ((positions >= prompt_len) & (target != pad_id)).astype(jnp.float32)


@jaxtyped(typechecker=typechecker)
def teacher_forcing_loss(
    decoder: TextDecoder,
    target: Int[Array, " L"],
    memory: Float[Array, "P E"],
    prompt_len: Int[Array, ""] | int = 0,
) -> Float[Array, ""]:
    """Mean cross-entropy of the target's tokens under teacher forcing, padding and the
    first `prompt_len` tokens (the task prompt, given at decoding) excluded.

    `target`: prompt, then the caption or answer ending with ``eos_id``, padded
    with ``pad_id``.
    """
    c = decoder.config
    logits = decoder(shift_right(target, c.bos_id), memory)
    losses = -jnp.take_along_axis(jax.nn.log_softmax(logits), target[:, None], axis=1)[:, 0]
    real = answer_mask(target, prompt_len, c.pad_id).astype(losses.dtype)
    return (losses * real).sum() / jnp.maximum(real.sum(), 1.0)


def _prompt(c: DecoderConfig, length: int, prompt: Int[Array, " L"] | None):
    """The prompt padded to `length`, and its length (its tokens before the first pad)."""
    if prompt is None:
        return jnp.full((length,), c.pad_id, jnp.int32), jnp.array(0)
    if prompt.shape[0] > length:
        raise ValueError(f"a prompt of {prompt.shape[0]} tokens exceeds length={length}")
    prompt = jnp.pad(prompt.astype(jnp.int32), (0, length - prompt.shape[0]),
                     constant_values=c.pad_id)  # fmt: skip
    return prompt, jnp.argmax(jnp.append(prompt == c.pad_id, True)).astype(jnp.int32)


@jaxtyped(typechecker=typechecker)
def greedy_decode(
    decoder: TextDecoder,
    memory: Float[Array, "P E"],
    length: int | None = None,
    prompt: Int[Array, " K"] | None = None,
) -> Int[Array, " L"]:
    """The most likely token at each step, to a fixed `length` (default ``max_len``).

    Each step reruns the decoder on the tokens so far (the later positions hold
    padding, which the causal mask hides). After the end token every position
    is ``pad_id``. A `prompt` (its tokens, then padding) fills the first
    positions as given. Jit-compatible: a ``fori_loop`` of fixed length.
    """
    c = decoder.config
    length = c.max_len if length is None else length
    start, prompt_len = _prompt(c, length, prompt)

    def step(t, carry):
        out, done = carry
        token = jnp.argmax(decoder(shift_right(out, c.bos_id), memory)[t]).astype(jnp.int32)
        token = jnp.where(t < prompt_len, start[t], jnp.where(done, c.pad_id, token))
        return out.at[t].set(token), done | (token == c.eos_id)

    out, _ = jax.lax.fori_loop(0, length, step, (start, jnp.array(False)))
    return out


@jaxtyped(typechecker=typechecker)
def beam_search(
    decoder: TextDecoder,
    memory: Float[Array, "P E"],
    beam: int,
    length: int | None = None,
    prompt: Int[Array, " K"] | None = None,
) -> Int[Array, " L"]:
    """The sequence of highest total log-probability that a `beam`-wide search finds.

    Fixed `length` (default ``max_len``); a beam that has emitted ``eos_id`` is
    finished: it continues with ``pad_id`` at no cost, so finished and open
    beams compete on their summed log-probabilities (no length normalisation).
    ``beam=1`` is `greedy_decode`; a beam of ``vocab_size ** (length - 1)`` is
    exhaustive. A `prompt` is forced on every beam at no cost, as in
    `greedy_decode`. Jit-compatible.
    """
    c = decoder.config
    length = c.max_len if length is None else length
    if beam < 1:
        raise ValueError(f"beam={beam} must be >= 1")
    vocab = c.vocab_size
    forced, prompt_len = _prompt(c, length, prompt)
    seqs = jnp.full((beam, length), c.pad_id, jnp.int32)
    scores = jnp.full((beam,), -jnp.inf).at[0].set(0.0)
    only_pad = jnp.full((vocab,), -jnp.inf).at[c.pad_id].set(0.0)

    def step(t, carry):
        seqs, scores, done = carry

        def next_log_probs(seq):
            return jax.nn.log_softmax(decoder(shift_right(seq, c.bos_id), memory)[t])

        logp = jax.vmap(next_log_probs)(seqs)
        logp = jnp.where(done[:, None], only_pad[None], logp)
        given = jnp.full((vocab,), -jnp.inf).at[forced[t]].set(0.0)
        logp = jnp.where(t < prompt_len, given[None], logp)
        total = (scores[:, None] + logp).reshape(-1)  # (beam * V)
        best, flat = jax.lax.top_k(total, beam)
        parent, token = flat // vocab, (flat % vocab).astype(jnp.int32)
        seqs = seqs[parent].at[:, t].set(token)
        return seqs, best, done[parent] | (token == c.eos_id)

    done = jnp.zeros((beam,), bool)
    seqs, scores, _ = jax.lax.fori_loop(0, length, step, (seqs, scores, done))
    return seqs[jnp.argmax(scores)]
