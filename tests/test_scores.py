"""Pair scores: agreement with the SigLIP loss on every sub-batch, exact zeros, errors."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aced.kernels import BlockSizes
from aced.losses import sigmoid_loss, sigmoid_pair_losses
from aced.selection import Embedded, score_matrix


def embedded(seed: int, n: int, d: int, t: float, b: float) -> Embedded:
    rng = np.random.default_rng(seed)
    zimg, ztxt = rng.standard_normal((2, n, d))
    zimg, ztxt = (z / np.linalg.norm(z, axis=1, keepdims=True) for z in (zimg, ztxt))
    normalise = lambda z: jnp.asarray(z, jnp.float32)  # noqa: E731
    return Embedded(normalise(zimg), normalise(ztxt), jnp.float32(t), jnp.float32(b))


@jax.jit  # one compile per subset size, not one per eager op
def subset_loss(model: Embedded, q) -> jax.Array:
    return sigmoid_loss(model.zimg[q], model.ztxt[q], model.t, model.b)


@hypothesis.settings(max_examples=5)
@hypothesis.given(
    n=st.integers(2, 40),
    d=st.integers(1, 9),
    seed=st.integers(0, 2**16),
    t=st.floats(1.0, 30.0),
    bias=st.floats(-12.0, 2.0),
)
def test_subset_scores_match_sigmoid_loss(n, d, seed, t, bias):
    learner = embedded(seed, n, d, t, bias)
    reference = embedded(seed + 1, n, d + 2, 10.0, -10.0)  # widths may differ
    rng = np.random.default_rng(seed)
    scores = np.asarray(score_matrix(learner, reference, "learnability"))
    for _ in range(2):
        q = rng.choice(n, size=rng.integers(1, n + 1), replace=False)
        total = scores[np.ix_(q, q)].sum(dtype=np.float32)
        want = len(q) * (subset_loss(learner, q) - subset_loss(reference, q))
        np.testing.assert_allclose(total, want, rtol=1e-5, atol=1e-5)


def test_matrix_matches_pair_losses():
    learner = embedded(0, 45, 6, 10.0, -10.0)
    reference = embedded(1, 45, 3, 20.0, -4.0)
    loss_l = sigmoid_pair_losses(learner.zimg, learner.ztxt, learner.t, learner.b)
    loss_r = sigmoid_pair_losses(reference.zimg, reference.ztxt, reference.t, reference.b)
    expected = {
        "learnability": loss_l - loss_r,
        "easy_reference": -loss_r,
        "hard_learner": loss_l,
    }
    for score, want in expected.items():
        for block in (None, BlockSizes(16, 16), BlockSizes(64, 32)):
            got = score_matrix(learner, reference, score, block=block)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-5)


def test_learnability_is_exactly_zero_against_itself():
    model = embedded(3, 50, 8, 10.0, -10.0)
    scores = score_matrix(model, model, "learnability")
    assert scores.shape == (50, 50)
    assert bool((scores == 0.0).all())


def test_unknown_score_lists_the_valid_ones():
    model = embedded(0, 4, 2, 10.0, -10.0)
    with pytest.raises(ValueError, match="learnability, easy_reference, hard_learner"):
        score_matrix(model, model, "loss")


def test_mismatched_super_batches_are_rejected():
    with pytest.raises(ValueError, match="same super-batch"):
        score_matrix(embedded(0, 4, 2, 1.0, 0.0), embedded(0, 5, 2, 1.0, 0.0), "learnability")
