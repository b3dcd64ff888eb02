"""The LiT-Decoder text decoder: causal, conditioned on the image, decoded greedily as written
out, trained by teacher forcing on a frozen encoder that receives no gradient."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aced.models import ViT, ViTConfig
from aced.models.decoder import (
    DecoderConfig,
    TextDecoder,
    beam_search,
    greedy_decode,
    shift_right,
    teacher_forcing_loss,
)

CONFIG = DecoderConfig(
    vocab_size=12, max_len=6, width=16, depth=2, mlp_dim=32, num_heads=2, encoder_width=8
)
ENCODER = ViTConfig(image_size=14, patch_size=7, channels=1, width=8, depth=1, mlp_dim=16,
                    num_heads=2, pool="gap")  # fmt: skip


@pytest.fixture(scope="module")
def decoder():
    return TextDecoder(CONFIG, key=jax.random.key(0))


@eqx.filter_jit
def logits(decoder, tokens, memory):  # one compiled program per shape, not one per operation
    return decoder(tokens, memory)


def memory(seed: int) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (4, CONFIG.encoder_width))


def test_later_tokens_never_change_earlier_logits(decoder):
    tokens = jnp.array([1, 5, 7, 3, 9, 4])
    changed = tokens.at[3:].set(jnp.array([8, 8, 8]))
    a, b = logits(decoder, tokens, memory(1)), logits(decoder, changed, memory(1))
    np.testing.assert_array_equal(a[:3], b[:3])
    assert not np.allclose(a[3:], b[3:])


def test_the_image_conditions_every_position(decoder):
    tokens = jnp.array([1, 5, 7, 3])
    a, b = logits(decoder, tokens, memory(1)), logits(decoder, tokens, memory(2))
    assert all(not np.allclose(a[t], b[t]) for t in range(4))


def test_teacher_forcing_is_the_cross_entropy_of_the_shifted_target_written_out(decoder):
    target = jnp.array([5, 7, CONFIG.eos_id, 0, 0, 0])  # padded after the end token
    inputs = np.array([CONFIG.bos_id, 5, 7, CONFIG.eos_id, 0, 0])
    np.testing.assert_array_equal(shift_right(target, CONFIG.bos_id), inputs)
    out = np.asarray(logits(decoder, jnp.asarray(inputs), memory(1)), np.float64)
    log_p = out - np.log(np.exp(out).sum(axis=1, keepdims=True))
    want = -np.mean([log_p[t, int(target[t])] for t in range(3)])  # the 3 real tokens
    got = teacher_forcing_loss(decoder, target, memory(1))
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def reference_greedy(decoder, mem) -> list[int]:
    """Greedy decoding as a plain Python loop."""
    out, done = [], False
    for t in range(CONFIG.max_len):
        inputs = [CONFIG.bos_id, *out, *[CONFIG.pad_id] * (CONFIG.max_len - 1 - len(out))]
        token = int(np.argmax(logits(decoder, jnp.array(inputs[: CONFIG.max_len]), mem)[t]))
        token = CONFIG.pad_id if done else token
        done = done or token == CONFIG.eos_id
        out.append(token)
    return out


@pytest.mark.parametrize("ends", [False, True])
def test_greedy_decode_is_the_argmax_loop_written_out(decoder, ends):
    if ends:  # make the end token likely from the third step on: the rest must be padding
        bias = decoder.head.bias.at[CONFIG.eos_id].add(3.0)
        decoder = eqx.tree_at(lambda d: d.head.bias, decoder, bias)
    mem = memory(3)
    got = jax.jit(greedy_decode)(decoder, mem)
    want = reference_greedy(decoder, mem)
    assert np.asarray(got).tolist() == want
    if ends:
        end = want.index(CONFIG.eos_id)
        assert want[end + 1 :] == [CONFIG.pad_id] * (CONFIG.max_len - 1 - end)


def test_a_frozen_encoder_gets_no_gradient_and_stays_bit_identical(decoder):
    encoder = ViT(ENCODER, key=jax.random.key(1))
    images = jax.random.normal(jax.random.key(2), (3, 14, 14, 1))
    targets = jnp.array([[5, 7, 2, 0, 0, 0], [3, 2, 0, 0, 0, 0], [9, 9, 9, 2, 0, 0]])

    def loss(models):
        encoder, decoder = models
        tokens = jax.vmap(lambda im: encoder(im, tokens=True))(images)
        tokens = jax.lax.stop_gradient(tokens)  # the frozen encoder
        return jax.vmap(teacher_forcing_loss, (None, 0, 0))(decoder, targets, tokens).mean()

    models = (encoder, decoder)
    optimizer = optax.adam(1e-2)

    @eqx.filter_jit
    def train_step(models, state):
        value, grads = eqx.filter_value_and_grad(loss)(models)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes float ** int32 internally
            updates, state = optimizer.update(grads, state)
        return eqx.apply_updates(models, updates), state, value, grads[0]

    state = optimizer.init(eqx.filter(models, eqx.is_inexact_array))
    values = []
    for _ in range(3):
        models, state, value, encoder_grads = train_step(models, state)
        values.append(float(value))
        for g in jax.tree.leaves(encoder_grads):
            assert not np.any(np.asarray(g))  # nothing reaches the encoder
    before, after = (jax.tree.leaves(eqx.filter(m, eqx.is_array)) for m in (encoder, models[0]))
    for x, y in zip(before, after, strict=True):
        np.testing.assert_array_equal(x, y)
    assert values[-1] < values[0]  # and the decoder learns


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"vocab_size": 2}, "eos_id=2 outside the vocabulary"),
        ({"eos_id": 1}, "must differ"),
        ({"depth": 0}, "depth=0 must be a positive integer"),
    ],
)
def test_bad_config_is_named(fields, message):
    base = dict(vocab_size=12, max_len=6, width=16, depth=2, mlp_dim=32, num_heads=2,
                encoder_width=8)  # fmt: skip
    with pytest.raises(ValueError, match=message):
        DecoderConfig(**(base | fields))


def sequence_log_prob(decoder, mem, seq) -> float:
    """Summed log-probability up to and including the first end token; -inf if anything but
    padding follows it."""
    c = decoder.config
    out = np.asarray(logits(decoder, shift_right(jnp.asarray(seq), c.bos_id), mem), np.float64)
    log_p = out - np.log(np.exp(out).sum(axis=1, keepdims=True))
    total = 0.0
    for t, token in enumerate(seq):
        total += log_p[t, token]
        if token == c.eos_id:
            return total if all(x == c.pad_id for x in seq[t + 1 :]) else -np.inf
    return total


def test_beam_search_is_greedy_at_width_one_and_exhaustive_at_full_width():
    import itertools

    small = DecoderConfig(vocab_size=5, max_len=3, width=16, depth=1, mlp_dim=32, num_heads=2,
                          encoder_width=8)  # fmt: skip
    decoder = TextDecoder(small, key=jax.random.key(9))  # a case where greedy is not the best
    decoder = eqx.tree_at(lambda d: d.head.bias, decoder, decoder.head.bias.at[2].add(1.0))
    mem = memory(5)
    np.testing.assert_array_equal(beam_search(decoder, mem, 1), greedy_decode(decoder, mem))
    best = max(
        itertools.product(range(5), repeat=3), key=lambda s: sequence_log_prob(decoder, mem, s)
    )
    got = jax.jit(beam_search, static_argnums=2)(decoder, mem, 5**2)
    assert tuple(np.asarray(got).tolist()) == best
    assert tuple(np.asarray(greedy_decode(decoder, mem)).tolist()) != best


def test_a_prompt_is_copied_then_continued_greedily_and_left_out_of_the_loss(decoder):
    prompt, mem = [7, 4], memory(4)
    got = np.asarray(jax.jit(greedy_decode)(decoder, mem, None, jnp.array(prompt))).tolist()
    out = list(prompt)  # the continuation as a plain loop from the prompt
    for t in range(len(prompt), CONFIG.max_len):
        inputs = [CONFIG.bos_id, *out, *[CONFIG.pad_id] * (CONFIG.max_len - 1 - len(out))]
        token = int(np.argmax(logits(decoder, jnp.array(inputs[: CONFIG.max_len]), mem)[t]))
        out.append(CONFIG.pad_id if CONFIG.eos_id in out[len(prompt) :] else token)
    assert got == out
    beam = jax.jit(beam_search, static_argnums=2)(decoder, mem, 1, None, jnp.array(prompt))
    assert np.asarray(beam).tolist() == got
    # Teacher forcing with a prompt of 2: the loss of the 3 tokens after it only.
    target = jnp.array([7, 4, 5, 9, CONFIG.eos_id, 0])
    out = np.asarray(logits(decoder, shift_right(target, CONFIG.bos_id), mem), np.float64)
    log_p = out - np.log(np.exp(out).sum(axis=1, keepdims=True))
    want = -np.mean([log_p[t, int(target[t])] for t in (2, 3, 4)])
    got = teacher_forcing_loss(decoder, target, mem, jnp.array(2))
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
