"""The sampling distribution of every registered sampled selection rule, not only its support.

Each rule declares what it samples (`SelectionRule.joint`, `SelectionRule.sampled_from`);
these tests check, over many keys at fixed seeds, that the draw follows exactly that:

- the first chunk is Plackett-Luce sampling without replacement from
  ``softmax(sampled_from(diag S, 0))`` (inclusion probabilities by enumeration);
- given the first pick j, the second follows ``softmax(sampled_from(c_j, 1))`` over the
  rest, where ``c_j = S_kk + S_jk + S_kj`` for a joint rule and ``S_kk`` for one that is not;
- scaling S by c > 1 never widens any chunk's effective support; adding a constant to S
  leaves the first chunk's draw unchanged.

Statistical tolerances: a chi-square statistic at its 0.1 % critical value, and per-item
binomial bounds of 4.5 standard deviations (two-sided p < 1e-5 each); every test also
shows that the same statistic rejects a wrong model, so none of them can pass vacuously.
"""

import functools
import itertools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from aced.selection import SELECTION_RULES, chunk_supports, joint_select
from aced.selection.jest import dense_terms

SAMPLED = [name for name, rule in SELECTION_RULES.items() if rule.sampled_from is not None]
DRAWS = 20_000


def softmax(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits[np.isfinite(logits)].max())
    return p / p.sum()


def rule_logits(rule: str, logits: np.ndarray, n_chosen: int) -> np.ndarray:
    """The logits `rule` declares it samples from, in float64."""
    sampled = SELECTION_RULES[rule].sampled_from
    return np.asarray(sampled(jnp.asarray(logits), jnp.int32(n_chosen)), np.float64)


@functools.cache
def _select_many(rule: str, n_select: int, n_chunks: int):
    one = lambda key, scores: joint_select(key, scores, n_select, n_chunks, rule=rule)  # noqa: E731
    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def draws(rule: str, scores: np.ndarray, n_select: int, n_chunks: int) -> np.ndarray:
    """(DRAWS, n_select) selections, one per key: one compiled program per rule and size."""
    keys = jax.random.split(jax.random.key(0), DRAWS)
    return np.asarray(_select_many(rule, n_select, n_chunks)(keys, jnp.asarray(scores)))


def chi_square(counts: np.ndarray, expected: np.ndarray) -> float:
    return float(((counts - expected) ** 2 / expected).sum())


def plackett_luce_inclusion(p: np.ndarray, k: int) -> np.ndarray:
    """P(item i is among k draws without replacement from p), by enumerating ordered draws."""
    inclusion = np.zeros_like(p)
    for order in itertools.permutations(range(len(p)), k):
        prob, left = 1.0, 1.0
        for i in order:
            prob *= p[i] / left
            left -= p[i]
        inclusion[list(order)] += prob
    return inclusion


def scores_of(seed: int, size: int, scale: float) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, (size, size)).astype(np.float32)


def test_plackett_luce_inclusion_known_values():
    # two of three with p = (1/2, 1/4, 1/4): item 0 is left out only by the orders (1, 2), (2, 1)
    got = plackett_luce_inclusion(np.array([0.5, 0.25, 0.25]), 2)
    left_out_0 = 2 * 0.25 * (0.25 / 0.75)
    np.testing.assert_allclose(got[0], 1 - left_out_0)
    np.testing.assert_allclose(got.sum(), 2.0)


@pytest.mark.parametrize("rule", SAMPLED)
def test_first_chunk_inclusion_is_plackett_luce(rule):
    size, k = 6, 3  # one chunk of 3 from 6
    scores = scores_of(1, size, 1.0)
    chosen = draws(rule, scores, k, 1)
    counts = np.bincount(chosen.ravel(), minlength=size)
    p = softmax(rule_logits(rule, np.diag(scores).astype(np.float64), 0))
    want = plackett_luce_inclusion(p, k)
    bound = 4.5 * np.sqrt(DRAWS * want * (1 - want))
    assert np.all(np.abs(counts - DRAWS * want) < bound), (counts, DRAWS * want)
    # the bound has power: the uniform inclusion k / B is rejected
    assert np.any(np.abs(counts - DRAWS * k / size) > bound), counts


@pytest.mark.parametrize("rule", SAMPLED)
def test_second_chunk_follows_the_conditional_logits(rule):
    size = 6
    scores = scores_of(2, size, 0.7)
    chosen = draws(rule, scores, 2, 2)  # two chunks of one
    s = scores.astype(np.float64)
    diagonal = np.diag(s)
    first = softmax(rule_logits(rule, diagonal, 0))
    stat = chi_square(np.bincount(chosen[:, 0], minlength=size), DRAWS * first)
    assert stat < stats.chi2.ppf(0.999, size - 1), stat

    def conditional(j: int, joint: bool) -> np.ndarray:
        logits = diagonal + s[:, j] + s[j, :] if joint else diagonal.copy()
        logits[j] = -np.inf
        return softmax(rule_logits(rule, logits, 1 if joint else 0))

    joint = SELECTION_RULES[rule].joint

    def statistic(joint_model: bool) -> float:
        total = 0.0
        for j in range(size):
            second = chosen[chosen[:, 0] == j, 1]
            q = np.delete(conditional(j, joint_model), j)
            counts = np.delete(np.bincount(second, minlength=size), j)
            total += chi_square(counts, len(second) * q)
        return total

    critical = stats.chi2.ppf(0.999, size * (size - 2))
    assert statistic(joint) < critical
    # the other model (joint vs diagonal-only) is rejected: the statistic has power here
    assert statistic(not joint) > 3 * critical


@pytest.mark.parametrize("rule", SAMPLED)
@hypothesis.settings(max_examples=8)
@hypothesis.given(
    seed=st.integers(0, 2**16),
    factor=st.floats(1.5, 4.0),
    n_chunks=st.sampled_from([1, 2, 4]),
)
def test_scaling_the_scores_up_never_widens_a_chunk(rule, seed, factor, n_chunks):
    size, n_select = 16, 8
    scores = jnp.asarray(scores_of(seed, size, 1.0))
    idx = joint_select(jax.random.key(seed), scores, n_select, n_chunks, rule=rule)

    def supports(s):
        diagonal, sums = dense_terms(s, n_select, n_chunks)
        return np.asarray(chunk_supports(diagonal, sums, idx, n_chunks, rule))

    assert np.all(supports(factor * scores) <= supports(scores) * (1 + 1e-5))


@pytest.mark.parametrize("rule", SAMPLED)
def test_a_constant_added_to_the_scores_leaves_the_first_chunk_unchanged(rule):
    size, k = 12, 4
    scores = scores_of(3, size, 1.0)
    # The perturbed logits shift by 0.5 up to float rounding; the order could flip only where
    # two of them lie within a rounding error, which no draw at these fixed keys has.
    np.testing.assert_array_equal(draws(rule, scores + 0.5, k, 1), draws(rule, scores, k, 1))
    assert not np.array_equal(draws(rule, 3.0 * scores, k, 1), draws(rule, scores, k, 1))
