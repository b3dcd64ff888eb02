"""Selection diagnostics: effective support replayed from the chosen indices, and precision."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh
from step_problem import B, step_config, tiny_batch, tiny_models

from aced.selection import (
    SELECTION_RULES,
    Embedded,
    chunk_supports,
    effective_support,
    joint_select,
    joint_select_blocked,
    score_matrix,
    selection_terms,
)
from aced.selection.jest import dense_terms
from aced.train.config import SelectionConfig
from aced.train.curation import Curated, learner_view, reference_view
from aced.train.diagnostics import make_support_fn, selection_precision

SAMPLED = [name for name, rule in SELECTION_RULES.items() if rule.sampled_from is not None]
SCALE = {  # what each built-in sampled rule divides chunk i's logits by (n = examples chosen)
    "jest": lambda n: 1.0,
    "independent": lambda n: 1.0,
    "jest_normalised": lambda n: 2 * n + 1.0,
}


def random_scores(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 2.0, (n, n)).astype(np.float32)


def plain_supports(scores: np.ndarray, idx: np.ndarray, n_chunks: int, scale) -> list[float]:
    """JEST's conditional logits written out in float64, chunk by chunk."""
    scores = scores.astype(np.float64)
    size, chunk = scores.shape[0], len(idx) // n_chunks
    logits, chosen, out = np.diag(scores).copy(), [], []
    for i in range(n_chunks):
        for q in idx[(i - 1) * chunk : i * chunk] if i else []:
            logits += scores[:, q] + scores[q, :]
        masked = np.where(np.isin(np.arange(size), chosen), -np.inf, logits) / scale(i * chunk)
        p = np.exp(masked - masked.max())
        p /= p.sum()
        out.append(1.0 / np.sum(p * p))
        chosen += list(idx[i * chunk : (i + 1) * chunk])
    return out


def test_effective_support_known_values():
    assert float(effective_support(jnp.zeros(8))) == pytest.approx(8.0)
    logits = jnp.array([0.0, 0.0, -jnp.inf, 0.0])
    assert float(effective_support(logits)) == pytest.approx(3.0)  # -inf takes no part
    assert float(effective_support(jnp.array([50.0, 0.0, 0.0]))) == pytest.approx(1.0)
    # two equal logits and one at -log(2) below: p = (0.4, 0.4, 0.2)
    third = jnp.array([0.0, 0.0, -np.log(2.0)], jnp.float32)
    assert float(effective_support(third)) == pytest.approx(1 / 0.36, rel=1e-5)


@pytest.mark.parametrize("rule", SAMPLED)
def test_equal_scores_leave_every_unchosen_example_equally_likely(rule):
    size, n_select, n_chunks = 24, 12, 4
    scores = jnp.zeros((size, size), jnp.float32)
    idx = joint_select(jax.random.key(0), scores, n_select, n_chunks, rule=rule)
    diagonal, sums = dense_terms(scores, n_select, n_chunks)
    got = np.asarray(chunk_supports(diagonal, sums, idx, n_chunks, rule))
    chunks = n_chunks if SELECTION_RULES[rule].joint else 1
    np.testing.assert_allclose(got, size - (n_select // chunks) * np.arange(chunks), rtol=1e-6)


@pytest.mark.parametrize("rule", SAMPLED)
@hypothesis.settings(max_examples=5, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**16), n_chunks=st.sampled_from([1, 2, 4]))
def test_replay_matches_the_conditional_logits_written_out(rule, seed, n_chunks):
    size, n_select = 32, 16
    scores = random_scores(seed, size)
    idx = joint_select(jax.random.key(seed), jnp.asarray(scores), n_select, n_chunks, rule=rule)
    chunks = n_chunks if SELECTION_RULES[rule].joint else 1
    diagonal, sums = dense_terms(jnp.asarray(scores), n_select, n_chunks)
    got = np.asarray(chunk_supports(diagonal, sums, idx, n_chunks, rule))
    want = plain_supports(scores, np.asarray(idx), chunks, SCALE[rule])
    np.testing.assert_allclose(got, want, rtol=1e-3)
    # never more candidates than are left unchosen, never fewer than one
    left = size - (n_select // chunks) * np.arange(chunks)
    assert np.all(got >= 1.0 - 1e-5) and np.all(got <= left + 1e-3)


def test_blocked_and_dense_terms_replay_alike():
    size, dim, n_select, n_chunks = 32, 8, 16, 4
    rng = np.random.default_rng(3)

    def view(t):
        z = rng.normal(size=(2, size, dim)).astype(np.float32)
        z /= np.linalg.norm(z, axis=-1, keepdims=True)
        return Embedded(jnp.asarray(z[0]), jnp.asarray(z[1]), jnp.float32(t), jnp.float32(-2.0))

    learner, reference = view(5.0), view(10.0)
    key = jax.random.key(1)
    idx = joint_select_blocked(key, learner, reference, "learnability", n_select, n_chunks)
    supports = {
        blocked: np.asarray(
            chunk_supports(
                *selection_terms(
                    learner, reference, "learnability", n_select, n_chunks, blocked=blocked
                ),
                idx,
                n_chunks,
                "jest",
            )
        )
        for blocked in (True, False)
    }
    np.testing.assert_allclose(supports[True], supports[False], rtol=1e-5)


def test_a_single_draw_reads_no_chunk_sums():
    # independent selection has only the diagonal (the training loop passes no chunk sums)
    logits = jnp.array([0.0, 0.0, -np.log(2.0), 5.0], jnp.float32)
    got = chunk_supports(logits, None, jnp.array([3, 0]), 4, "independent")
    np.testing.assert_allclose(got, [effective_support(logits)], rtol=1e-6)


def test_a_greedy_rule_has_no_support():
    diagonal, sums = dense_terms(jnp.zeros((4, 4)), 2, 2)
    with pytest.raises(ValueError, match="greedy draw has no sampling distribution"):
        chunk_supports(diagonal, sums, jnp.array([0, 1]), 2, "greedy")


def test_precision_known_values():
    quality = np.array([0, 0, 1, 2, 4, 0])  # clean, clean, mismatched, partial, duplicate, clean
    got = selection_precision(quality, np.array([0, 2, 5]))
    assert got["select/precision"] == pytest.approx(2 / 3)
    assert got["select/base_rate"] == pytest.approx(0.5)
    assert got["select/mismatched"] == pytest.approx(1 / 3)
    assert got["select/base/mismatched"] == pytest.approx(1 / 6)
    assert got["select/partial"] == 0.0 and got["select/base/partial"] == pytest.approx(1 / 6)
    assert got["select/corrupted"] == 0.0 == got["select/base/corrupted"]
    assert got["select/base/duplicate"] == pytest.approx(1 / 6)
    kinds = [k for k in got if not k.startswith(("select/base", "select/precision"))]
    # every selected example is clean or of one kind
    assert got["select/precision"] + sum(got[k] for k in kinds) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"must lie in \[0, 6\)"):
        selection_precision(quality, np.array([6]))


def test_local_scope_support_is_the_mean_of_each_devices_replay():
    learner, reference = tiny_models()
    batch, n_dev = tiny_batch(), 4
    mesh = Mesh(np.array(jax.devices()[:n_dev]), ("data",), axis_types=(AxisType.Auto,))
    selection = SelectionConfig(filter_ratio=0.5, n_chunks=2, scope="local")
    config = step_config("acid", selection=selection, reference_embeddings="online")
    rows, n_select = B // n_dev, B // 2 // n_dev
    # any n_select distinct rows of each device's shard, in the order a selection drew them
    rng = np.random.default_rng(0)
    idx = np.concatenate([d * rows + rng.permutation(rows)[:n_select] for d in range(n_dev)])
    idx = jnp.asarray(idx, jnp.int32)
    views = jax.jit(
        lambda lrn, ref, bt: (
            learner_view(lrn, bt, config, mesh),
            reference_view(ref, bt, config, mesh),
        )
    )
    mine, theirs = views(learner, reference, batch)
    got = make_support_fn(config, mesh)(Curated(idx, mine, theirs))
    per_device = []
    for d, chosen in enumerate(np.asarray(idx).reshape(n_dev, -1)):
        part = slice(d * rows, (d + 1) * rows)

        def shard(v):
            return Embedded(v.zimg[part], v.ztxt[part], v.t, v.b)

        scores = score_matrix(shard(mine), shard(theirs), "learnability")
        terms = dense_terms(scores, n_select, 2)
        local = jnp.asarray(chosen - d * rows)
        per_device.append(np.asarray(chunk_supports(*terms, local, 2, "jest")))
    np.testing.assert_allclose(got, np.mean(per_device, axis=0), rtol=1e-5)
