"""Dense contrastive losses: hand-computed values, a float64 reference, invariants."""

import math

import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from aced.losses import (
    sigmoid_loss,
    sigmoid_loss_with_metrics,
    sigmoid_pair_losses,
    softmax_loss,
)


def softplus(x: float) -> float:
    """-log sigmoid(-x), computed by hand."""
    return math.log1p(math.exp(x))


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    z = rng.normal(size=(n, d))
    return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)


def sigmoid_loss_reference(zimg, ztxt, t, b) -> float:
    """big_vision's SigLIP loss in float64 numpy: sum over pairs / n."""
    logits = t * zimg.astype(np.float64) @ ztxt.astype(np.float64).T + b
    labels = 2.0 * np.eye(len(zimg)) - 1.0
    return float(np.logaddexp(0.0, -labels * logits).sum() / len(zimg))


def softmax_loss_reference(zimg, ztxt, t) -> float:
    """CLIP InfoNCE in float64 numpy, both directions averaged."""
    logits = t * zimg.astype(np.float64) @ ztxt.astype(np.float64).T

    def xent(x):  # rows of x against the diagonal targets
        lse = np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1)
        return float(np.mean(lse - np.diagonal(x)))

    return 0.5 * (xent(logits) + xent(logits.T))


# ---------------------------------------------------------------- known values


def test_sigmoid_single_pair():
    z = jnp.array([[1.0, 0.0]])
    t, b = 2.0, -1.0
    # one positive, logit t + b = 1: loss = -log sigmoid(1) = log(1 + e^-1).
    assert float(sigmoid_loss(z, z, t, b)) == pytest.approx(softplus(-1.0), rel=1e-6)


def test_sigmoid_two_orthogonal_pairs():
    z = jnp.eye(2)
    t, b = 3.0, -2.0
    # positives: logit t + b = 1; negatives: logit b = -2 (orthogonal).
    pairs = np.array(sigmoid_pair_losses(z, z, t, b))
    np.testing.assert_allclose(np.diagonal(pairs), [softplus(-1.0)] * 2, rtol=1e-6)
    np.testing.assert_allclose(pairs[[0, 1], [1, 0]], [softplus(-2.0)] * 2, rtol=1e-6)
    expected = (2 * softplus(-1.0) + 2 * softplus(-2.0)) / 2
    assert float(sigmoid_loss(z, z, t, b)) == pytest.approx(expected, rel=1e-6)


def test_sigmoid_two_identical_pairs():
    z = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    t, b = 3.0, -2.0
    # every logit is t + b = 1: positives pay softplus(-1), negatives softplus(1).
    expected = (2 * softplus(-1.0) + 2 * softplus(1.0)) / 2
    assert float(sigmoid_loss(z, z, t, b)) == pytest.approx(expected, rel=1e-6)


def test_sigmoid_metrics_known_values():
    r = 1.0 / math.sqrt(2.0)
    zimg = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    ztxt = jnp.array([[1.0, 0.0], [r, r]])
    t, b = 4.0, -1.0
    # logits [[t + b, t r + b], [b, t r + b]]; positives on the diagonal.
    pos = [t + b, t * r + b]
    neg = [t * r + b, b]
    loss, metrics = sigmoid_loss_with_metrics(zimg, ztxt, t, b)
    expected = (sum(softplus(-x) for x in pos) + sum(softplus(x) for x in neg)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(loss) == pytest.approx(float(sigmoid_loss(zimg, ztxt, t, b)), rel=1e-6)
    assert float(metrics["pos_min_logit"]) == pytest.approx(min(pos), rel=1e-6)
    assert float(metrics["pos_avg_logit"]) == pytest.approx(sum(pos) / 2, rel=1e-6)
    assert float(metrics["neg_max_logit"]) == pytest.approx(max(neg), rel=1e-6)
    assert float(metrics["neg_avg_logit"]) == pytest.approx(sum(neg) / 2, rel=1e-6)


def test_softmax_two_orthogonal_pairs():
    z = jnp.eye(2)
    t = 3.0
    # each row is softmax over [t, 0] with target t: -log(e^t / (e^t + 1)).
    assert float(softmax_loss(z, z, t)) == pytest.approx(softplus(-t), rel=1e-6)


def test_softmax_single_pair_is_zero():
    z = jnp.array([[0.6, 0.8]])
    assert float(softmax_loss(z, z, 10.0)) == pytest.approx(0.0, abs=1e-7)


# --------------------------------------------------------- reference, reduction

shapes = st.tuples(st.integers(1, 6), st.integers(2, 5), st.integers(0, 2**16))


@settings(max_examples=15)
@given(shapes, st.floats(0.5, 20.0), st.floats(-10.0, 5.0))
def test_sigmoid_matches_reference(shape, t, b):
    n, d, seed = shape
    rng = np.random.default_rng(seed)
    zimg, ztxt = unit_rows(rng, n, d), unit_rows(rng, n, d)
    expected = sigmoid_loss_reference(zimg, ztxt, t, b)
    assert float(sigmoid_loss(jnp.asarray(zimg), jnp.asarray(ztxt), t, b)) == pytest.approx(
        expected, rel=1e-5, abs=1e-6
    )


@settings(max_examples=15)
@given(shapes, st.floats(0.5, 20.0))
def test_softmax_matches_reference(shape, t):
    n, d, seed = shape
    rng = np.random.default_rng(seed)
    zimg, ztxt = unit_rows(rng, n, d), unit_rows(rng, n, d)
    expected = softmax_loss_reference(zimg, ztxt, t)
    assert float(softmax_loss(jnp.asarray(zimg), jnp.asarray(ztxt), t)) == pytest.approx(
        expected, rel=1e-5, abs=1e-6
    )


def test_sigmoid_reduction_none_rows():
    rng = np.random.default_rng(0)
    zimg, ztxt = jnp.asarray(unit_rows(rng, 5, 3)), jnp.asarray(unit_rows(rng, 5, 3))
    t, b = 7.0, -3.0
    rows = sigmoid_loss(zimg, ztxt, t, b, reduction="none")
    assert rows.shape == (5,)
    # row i = image i against every text.
    pairs = sigmoid_pair_losses(zimg, ztxt, t, b)
    np.testing.assert_allclose(rows, pairs.sum(axis=1), rtol=1e-6)
    assert float(rows.mean()) == pytest.approx(float(sigmoid_loss(zimg, ztxt, t, b)), rel=1e-6)


# ------------------------------------------------------------------ invariants


@settings(max_examples=15)
@given(shapes, st.randoms(use_true_random=False))
def test_invariant_to_permuting_pairs(shape, random):
    n, d, seed = shape
    rng = np.random.default_rng(seed)
    zimg, ztxt = unit_rows(rng, n, d), unit_rows(rng, n, d)
    perm = list(range(n))
    random.shuffle(perm)
    t, b = 5.0, -2.0
    a = (jnp.asarray(zimg), jnp.asarray(ztxt))
    p = (jnp.asarray(zimg[perm]), jnp.asarray(ztxt[perm]))
    assert float(sigmoid_loss(*p, t, b)) == pytest.approx(float(sigmoid_loss(*a, t, b)), rel=1e-5)
    assert float(softmax_loss(*p, t)) == pytest.approx(float(softmax_loss(*a, t)), rel=1e-5)


@settings(max_examples=15)
@given(shapes)
def test_swapping_modalities_keeps_total(shape):
    n, d, seed = shape
    rng = np.random.default_rng(seed)
    zimg, ztxt = jnp.asarray(unit_rows(rng, n, d)), jnp.asarray(unit_rows(rng, n, d))
    t, b = 5.0, -2.0
    assert float(sigmoid_loss(ztxt, zimg, t, b)) == pytest.approx(
        float(sigmoid_loss(zimg, ztxt, t, b)), rel=1e-5
    )
    assert float(softmax_loss(ztxt, zimg, t)) == pytest.approx(
        float(softmax_loss(zimg, ztxt, t)), rel=1e-5
    )


def embeddings_with_similarities(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows with ``zimg @ ztxt.T == sim`` exactly (up to rounding).

    Images are the first n basis vectors of R^(n+1); text j holds its
    similarities to the images and puts the rest of its unit norm on the extra
    axis, so one similarity can change while every other stays fixed.
    """
    n = sim.shape[0]
    zimg = np.eye(n, n + 1)
    slack = np.sqrt(1.0 - (sim**2).sum(axis=0))
    ztxt = np.concatenate([sim.T, slack[:, None]], axis=1)
    return zimg.astype(np.float32), ztxt.astype(np.float32)


# t, b and the step keep the change in the loss far above float32 rounding of
# the total; with t = 20 a saturated positive moves the loss by less than an ulp.
@settings(max_examples=15)
@given(
    st.integers(1, 5),
    st.integers(0, 2**16),
    st.floats(0.1, 0.4),
    st.floats(1.0, 5.0),
    st.floats(-6.0, 0.0),
)
def test_raising_a_positive_similarity_lowers_the_loss(n, seed, step, t, b):
    rng = np.random.default_rng(seed)
    # |entries| <= 0.5 / sqrt(n) leave room on the slack axis for the raised one.
    sim = rng.uniform(-0.5, 0.5, size=(n, n)) / math.sqrt(n)
    i = int(rng.integers(n))
    raised = sim.copy()
    raised[i, i] += step
    before = [jnp.asarray(z) for z in embeddings_with_similarities(sim)]
    after = [jnp.asarray(z) for z in embeddings_with_similarities(raised)]
    np.testing.assert_allclose(after[0] @ after[1].T, raised, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(after[1], axis=1), 1.0, rtol=1e-6)
    assert float(sigmoid_loss(*after, t, b)) < float(sigmoid_loss(*before, t, b))
    if n > 1:  # a single pair's softmax loss is 0 whatever its similarity
        assert float(softmax_loss(*after, t)) < float(softmax_loss(*before, t))
