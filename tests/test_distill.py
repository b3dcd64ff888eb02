"""Distillation losses: known values, the open_clip formula, KL properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aced.losses.distill import feature_kd, sigmoid_kd, softmax_kd, softmax_kl


def _logits(seed, n):
    return jax.random.normal(jax.random.key(seed), (n, n)) * 3.0


def _open_clip_distill(student, teacher):
    """open_clip's DistillClipLoss.dist_loss, written in numpy."""

    def dist_loss(t, s):
        t = np.exp(t - t.max(1, keepdims=True))
        t = t / t.sum(1, keepdims=True)
        log_s = s - s.max(1, keepdims=True)
        log_s = log_s - np.log(np.exp(log_s).sum(1, keepdims=True))
        return -(t * log_s).sum(1).mean(0)

    s, t = np.asarray(student, np.float64), np.asarray(teacher, np.float64)
    return (dist_loss(t, s) + dist_loss(t.T, s.T)) / 2


@given(st.integers(0, 1000), st.integers(1, 9))
def test_softmax_kd_equals_open_clip(seed, n):
    s, t = _logits(seed, n), _logits(seed + 1, n)
    np.testing.assert_allclose(softmax_kd(s, t), _open_clip_distill(s, t), rtol=1e-5, atol=1e-6)


def test_softmax_kd_known_value():
    # Uniform teacher over 2 columns, student certain: CE = -(0.5 log p + 0.5 log(1-p)).
    s = jnp.array([[0.0, jnp.log(3.0)], [jnp.log(3.0), 0.0]])
    t = jnp.zeros((2, 2))
    expected = -(0.5 * np.log(0.25) + 0.5 * np.log(0.75))
    np.testing.assert_allclose(softmax_kd(s, t), expected, rtol=1e-6)


@given(st.integers(0, 1000), st.integers(2, 9), st.floats(0.25, 4.0))
def test_softmax_kl_nonnegative_and_zero_at_teacher(seed, n, tau):
    s, t = _logits(seed, n), _logits(seed + 7, n)
    assert softmax_kl(s, t, tau) >= -1e-6
    assert abs(float(softmax_kl(t, t, tau))) < 1e-6
    # A constant shift of all logits leaves both softmaxes, hence KL, unchanged.
    assert abs(float(softmax_kl(t + 5.0, t, tau))) < 1e-5


@pytest.mark.parametrize("loss", [softmax_kd, softmax_kl, sigmoid_kd])
def test_zero_student_gradient_at_teacher(loss):
    t = _logits(3, 6)
    grad = jax.grad(loss)(t, t)
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)
    # ...and a nonzero gradient elsewhere, so the check above can fail.
    assert float(jnp.abs(jax.grad(loss)(t * 0.5, t)).max()) > 1e-3


def test_sigmoid_kd_known_value():
    # Teacher logit 0 -> target 0.5 on every pair; student logit 0 -> BCE = log 2 per pair.
    z = jnp.zeros((3, 3))
    np.testing.assert_allclose(sigmoid_kd(z, z), 9 * np.log(2.0) / 3, rtol=1e-6)


def test_feature_kd_known_values():
    a = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    b = jnp.array([[0.0, 1.0], [0.0, 2.0]])  # orthogonal to a[0], parallel to a[1]
    np.testing.assert_allclose(feature_kd(a, b, "cosine"), 0.5, rtol=1e-6)
    np.testing.assert_allclose(feature_kd(a, b, "l2"), 1.0, rtol=1e-6)
    np.testing.assert_allclose(feature_kd(a, a * 3.0, "cosine"), 0.0, atol=1e-7)


def test_bad_temperature_is_rejected():
    with pytest.raises(ValueError, match="temperature=0"):
        softmax_kd(jnp.zeros((2, 2)), jnp.zeros((2, 2)), temperature=0.0)
