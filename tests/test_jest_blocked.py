"""The blocked selection returns exactly the dense selection's indices, for every
registered pair score and selection rule."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aced.kernels import BlockSizes
from aced.selection import (
    PAIR_SCORES,
    SELECTION_RULES,
    Embedded,
    joint_select,
    joint_select_blocked,
    score_matrix,
)


def embedded(rng: np.random.Generator, n: int, d: int, t: float, b: float) -> Embedded:
    zimg, ztxt = rng.standard_normal((2, n, d))
    zimg, ztxt = (z / np.linalg.norm(z, axis=1, keepdims=True) for z in (zimg, ztxt))
    normalise = lambda z: jnp.asarray(z, jnp.float32)  # noqa: E731
    return Embedded(normalise(zimg), normalise(ztxt), jnp.float32(t), jnp.float32(b))


@pytest.mark.parametrize("rule", list(SELECTION_RULES))
@hypothesis.settings(max_examples=4)
@hypothesis.given(
    n=st.integers(1, 100),
    d=st.integers(1, 8),
    data=st.data(),
    score=st.sampled_from(list(PAIR_SCORES)),
    block=st.sampled_from([None, BlockSizes(16, 16), BlockSizes(32, 16)]),
    seed=st.integers(0, 2**16),
    t=st.floats(1.0, 30.0),
    bias=st.floats(-12.0, 2.0),
)
def test_blocked_equals_dense(rule, n, d, data, score, block, seed, t, bias):
    n_chunks = data.draw(st.integers(1, min(n, 16)), label="n_chunks")
    n_select = n_chunks * data.draw(st.integers(1, n // n_chunks), label="chunk size")
    rng = np.random.default_rng(seed)
    learner = embedded(rng, n, d, t, bias)
    reference = embedded(rng, n, d + 3, 10.0, -10.0)
    key = jax.random.key(seed)
    dense = joint_select(
        key, score_matrix(learner, reference, score, block=block), n_select, n_chunks, rule=rule
    )
    blocked = joint_select_blocked(
        key, learner, reference, score, n_select, n_chunks, block=block, rule=rule
    )
    np.testing.assert_array_equal(blocked, dense)


def test_exact_ties_break_alike():
    # Identical examples make every pair score tie; greedy selection then leans
    # on top_k's tie order alone, which only identical logits can reproduce.
    rng = np.random.default_rng(0)
    one = embedded(rng, 1, 4, 10.0, -10.0)
    same = Embedded(jnp.tile(one.zimg, (40, 1)), jnp.tile(one.ztxt, (40, 1)), one.t, one.b)
    key = jax.random.key(1)
    for score in PAIR_SCORES:
        dense = joint_select(key, score_matrix(same, same, score), 16, 4, rule="greedy")
        blocked = joint_select_blocked(key, same, same, score, 16, 4, rule="greedy")
        np.testing.assert_array_equal(blocked, dense)


def test_bad_arguments_are_rejected():
    rng = np.random.default_rng(0)
    learner, reference = embedded(rng, 8, 3, 10.0, -10.0), embedded(rng, 8, 3, 10.0, -10.0)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="pair score 'loss' is unknown; registered: learnability"):
        joint_select_blocked(key, learner, reference, "loss", 4, 2)
    with pytest.raises(ValueError, match="same super-batch"):
        joint_select_blocked(key, learner, embedded(rng, 9, 3, 1.0, 0.0), "learnability", 4, 2)
    with pytest.raises(ValueError, match="multiple of n_chunks=3"):
        joint_select_blocked(key, learner, reference, "learnability", 4, 3)
    bad = Embedded(learner.zimg.at[0, 0].set(jnp.nan), learner.ztxt, learner.t, learner.b)
    with pytest.raises(ValueError, match="learner embeddings, t and b must be finite"):
        joint_select_blocked(key, bad, reference, "learnability", 4, 2)


def test_precision_is_one_for_both_paths_and_bf16_stays_within_its_bound():
    rng, key = np.random.default_rng(0), jax.random.key(0)
    learner, reference = embedded(rng, 64, 32, 10.0, -5.0), embedded(rng, 64, 35, 10.0, -10.0)
    scores = {}
    for precision in ("highest", "tf32", "bf16"):
        block = BlockSizes(32, 16, precision)
        scores[precision] = np.asarray(
            score_matrix(learner, reference, "learnability", block=block)
        )
        dense = joint_select(key, jnp.asarray(scores[precision]), 16, 4)
        blocked = joint_select_blocked(key, learner, reference, "learnability", 16, 4, block=block)
        np.testing.assert_array_equal(blocked, dense)
    if jax.default_backend() == "cpu":  # XLA:CPU has no TF32: its default f32 product is f32
        np.testing.assert_array_equal(scores["tf32"], scores["highest"])
    # Rounding unit vectors to bf16 (8 fraction bits) moves each <zimg, ztxt> by at most
    # 2 * 2**-9 (+ f32 rounding); a pair loss is 1-Lipschitz in its logit t * <.,.> + b, so
    # a learnability score moves by at most 2**-8 * (t_learner + t_reference).
    error = np.abs(scores["bf16"] - scores["highest"]).max()
    assert 0 < error <= 2**-8 * (10.0 + 10.0) * 1.01
