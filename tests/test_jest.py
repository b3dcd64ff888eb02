"""Properties of JEST joint selection and the independent baseline (dense path).

The invariants run for every entry of `SELECTION_RULES` (parametrised at
collection), so a rule registered before the tests are collected inherits them.
"""

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aced.selection import SELECTION_RULES, independent_select, joint_select

RULES = list(SELECTION_RULES)


def random_scores(seed: int, n: int, scale: float = 1.0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(0.0, scale, (n, n)), jnp.float32)


@st.composite
def selection_sizes(draw, max_size=40):
    n = draw(st.integers(1, max_size), label="B")
    n_chunks = draw(st.integers(1, n), label="n_chunks")
    per_chunk = draw(st.integers(1, n // n_chunks), label="chunk size")
    return n, per_chunk * n_chunks, n_chunks


@pytest.mark.parametrize("rule", RULES)
@hypothesis.settings(max_examples=6)
@hypothesis.given(sizes=selection_sizes(), seed=st.integers(0, 2**16))
def test_selects_distinct_in_range_indices(rule, sizes, seed):
    n, n_select, n_chunks = sizes
    indices = joint_select(
        jax.random.key(seed), random_scores(seed, n), n_select, n_chunks, rule=rule
    )
    indices = np.asarray(indices)
    assert indices.dtype == np.int32 and indices.shape == (n_select,)
    assert len(set(indices.tolist())) == n_select  # never re-selects
    assert indices.min() >= 0 and indices.max() < n


def test_deterministic_per_key_and_different_across_keys():
    scores = random_scores(0, 64)
    draw = lambda seed: np.asarray(joint_select(jax.random.key(seed), scores, 16, 4))  # noqa: E731
    np.testing.assert_array_equal(draw(1), draw(1))
    draws = {tuple(draw(seed)) for seed in range(8)}
    assert len(draws) == 8


def test_equal_scores_select_every_example_equally_often():
    n, n_select, n_chunks, n_draws = 16, 4, 2, 4000
    scores = jnp.zeros((n, n), jnp.float32)
    keys = jax.random.split(jax.random.key(0), n_draws)
    indices = jax.vmap(lambda k: joint_select(k, scores, n_select, n_chunks))(keys)
    counts = np.bincount(np.asarray(indices).ravel(), minlength=n)
    expected = n_draws * n_select / n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    # chi-square, 15 degrees of freedom: 37.7 is the 0.1 % critical value; each
    # count's sd is about 2.7 % of its mean, so 10 % is over 3.6 sd.
    assert chi2 < 37.7, (chi2, counts)
    assert np.abs(counts / expected - 1).max() < 0.1, counts


@pytest.mark.parametrize("rule", RULES)
@hypothesis.settings(max_examples=5)
@hypothesis.given(sizes=selection_sizes(), seed=st.integers(0, 2**16))
def test_overwhelming_learnability_is_always_selected(rule, sizes, seed):
    n, n_select, n_chunks = sizes
    star = seed % n
    scores = random_scores(seed, n).at[star, star].set(60.0)
    indices = joint_select(jax.random.key(seed), scores, n_select, n_chunks, rule=rule)
    assert star in np.asarray(indices)[: n_select // n_chunks]  # in the first chunk


def brute_force_greedy(scores: np.ndarray, n_select: int) -> list[int]:
    """Grow Q one example at a time, each maximising sum_{i,j in Q} S_ij."""
    chosen: list[int] = []
    for _ in range(n_select):
        rest = [k for k in range(len(scores)) if k not in chosen]
        totals = [scores[np.ix_(chosen + [k], chosen + [k])].sum() for k in rest]
        chosen.append(rest[int(np.argmax(totals))])
    return chosen


@hypothesis.settings(max_examples=8)
@hypothesis.given(n=st.integers(1, 12), data=st.data(), seed=st.integers(0, 2**16))
def test_greedy_one_per_chunk_is_the_greedy_maximiser(n, data, seed):
    n_select = data.draw(st.integers(1, n), label="n_select")
    scores = random_scores(seed, n)
    indices = joint_select(jax.random.key(0), scores, n_select, n_select, rule="greedy")
    want = brute_force_greedy(np.asarray(scores, np.float64), n_select)
    assert np.asarray(indices).tolist() == want


def paired_scores(n_pairs: int, n_singles: int) -> np.ndarray:
    """Pairs worth 3 + 3 only together; singles worth 1 alone; nothing else."""
    n = 2 * n_pairs + n_singles
    scores = np.zeros((n, n), np.float32)
    for p in range(n_pairs):
        scores[2 * p, 2 * p + 1] = scores[2 * p + 1, 2 * p] = 3.0
    scores[np.arange(2 * n_pairs, n), np.arange(2 * n_pairs, n)] = 1.0
    return scores


def test_joint_beats_independent_when_pairs_matter():
    scores = jnp.asarray(paired_scores(n_pairs=12, n_singles=12))
    keys = jax.random.split(jax.random.key(0), 200)
    value = lambda q: scores[q][:, q].sum()  # noqa: E731
    joint = jax.vmap(lambda k: value(joint_select(k, scores, 8, 8)))(keys)
    alone = jax.vmap(lambda k: value(independent_select(k, jnp.diagonal(scores), 8)))(keys)
    assert float(joint.mean()) > float(alone.mean()) + 4.0, (joint.mean(), alone.mean())


@pytest.mark.parametrize("rule", RULES)
def test_independent_is_joint_with_one_chunk(rule):
    scores = random_scores(3, 30)
    for seed in range(3):
        key = jax.random.key(seed)
        np.testing.assert_array_equal(
            independent_select(key, jnp.diagonal(scores), 10, rule=rule),
            joint_select(key, scores, 10, 1, rule=rule),
        )


def test_a_rule_that_is_not_joint_ignores_the_off_diagonal():
    scores = random_scores(4, 30)
    key = jax.random.key(2)
    diagonal_only = jnp.diag(jnp.diagonal(scores))
    for rule in (name for name, entry in SELECTION_RULES.items() if not entry.joint):
        np.testing.assert_array_equal(
            joint_select(key, scores, 12, 4, rule=rule),
            joint_select(key, diagonal_only, 12, 4, rule=rule),
        )


def test_unknown_rule_lists_the_registered_ones():
    with pytest.raises(ValueError, match="selection rule 'best' is unknown; registered: jest"):
        joint_select(jax.random.key(0), random_scores(0, 8), 4, 2, rule="best")


def test_jit_matches_eager():
    scores = random_scores(5, 33)
    key = jax.random.key(5)
    jitted = jax.jit(joint_select, static_argnames=("n_select", "n_chunks", "rule"))
    np.testing.assert_array_equal(
        jitted(key, scores, n_select=12, n_chunks=3), joint_select(key, scores, 12, 3)
    )


@pytest.mark.parametrize(
    "n_select, n_chunks, message",
    [
        (9, 3, r"n_select=9 must be <= the super-batch size B=8"),
        (6, 4, r"n_select=6 must be a multiple of n_chunks=4"),
        (4, 0, r"n_chunks=0 must be >= 1"),
        (0, 1, r"n_select=0 must be >= 1"),
    ],
)
def test_bad_sizes_are_rejected(n_select, n_chunks, message):
    with pytest.raises(ValueError, match=message):
        joint_select(jax.random.key(0), random_scores(0, 8), n_select, n_chunks)


def test_non_square_scores_are_rejected():
    # jaxtyping's check of "B B" (a TypeError) runs before the function's own ValueError.
    with pytest.raises((TypeError, ValueError), match="B B|square"):
        joint_select(jax.random.key(0), jnp.zeros((4, 5), jnp.float32), 2, 1)


def test_non_finite_scores_are_rejected_eagerly_under_jit_and_vmap():
    scores = random_scores(0, 8).at[2, 3].set(jnp.nan)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="scores must be finite"):
        joint_select(key, scores, 4, 2)
    with pytest.raises(ValueError, match="must be finite"):
        independent_select(key, jnp.diagonal(scores).at[0].set(jnp.inf), 4)
    # Under tracing eqx.error_if raises at run time (wrapped by jax.jit, plain under filter_jit).
    runtime_errors = (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError)
    jitted = jax.jit(joint_select, static_argnames=("n_select", "n_chunks"))
    with pytest.raises(runtime_errors, match="scores must be finite"):
        jitted(key, scores, n_select=4, n_chunks=2).block_until_ready()
    batched = jax.vmap(lambda s: joint_select(key, s, 4, 2))
    with pytest.raises(runtime_errors, match="scores must be finite"):
        batched(jnp.stack([random_scores(1, 8), scores])).block_until_ready()
    # finite batches pass through the same check
    assert batched(jnp.stack([random_scores(1, 8)] * 2)).shape == (2, 4)


def test_normalised_rule_divides_each_chunk_by_2q_plus_1():
    from aced.selection import sample_top_k

    rule = SELECTION_RULES["jest_normalised"]
    logits = jnp.asarray(np.random.default_rng(1).normal(0, 3, 30), jnp.float32)
    key = jax.random.key(4)
    for n_chosen in (0, 4, 12):
        got = rule.draw(key, logits, jnp.int32(n_chosen), 4)
        np.testing.assert_array_equal(got, sample_top_k(key, logits / (2 * n_chosen + 1), 4))
    scores = random_scores(2, 48, scale=3.0)
    normalised = np.asarray(joint_select(key, scores, 24, 6, rule="jest_normalised"))
    plain = np.asarray(joint_select(key, scores, 24, 6, rule="jest"))
    np.testing.assert_array_equal(normalised[:4], plain[:4])  # |Q| = 0: the same first chunk
    assert len(set(normalised.tolist())) == 24
    assert not np.array_equal(normalised, plain)
