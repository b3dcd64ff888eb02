"""Evaluation suite: tasks mean what they say, an oracle scores 1, a random
model scores chance, and the metrics match hand-computed values."""

import json
import math

import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from data.fmnist_fixture import read_cells, write_fake_fashion_mnist
from hypothesis import given, settings

from aced.data import CLASS_NAMES, COARSE_OF_CLASS, SceneConfig, builtin_tokenizer, to_model_images
from aced.data.captions import position_names
from aced.eval import (
    TASK_NAMES,
    average_prompt_embeddings,
    build_suite,
    evaluate,
    format_table,
    retrieval_recalls,
    write_json,
    zero_shot_accuracy,
)

TOKENIZER = builtin_tokenizer()
PER_TASK, RETRIEVAL = 200, 100


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    data_dir = write_fake_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=60, n_test=600)
    return build_suite(seed=0, per_task=PER_TASK, retrieval_size=RETRIEVAL, data_dir=data_dir)


class OracleModel(eqx.Module):
    """Knows the truth: an image embeds as the normalised indicator of the texts
    true of it, a text as its one-hot. Images and texts are recognised by exact
    lookup, in jnp, so the model runs under jit like a real one."""

    image_table: jax.Array  # (N, P) flattened grey images
    image_truth: jax.Array  # (N, M)
    token_table: jax.Array  # (M, L)

    def embed_images(self, images):
        flat = images[..., 0].reshape(images.shape[0], -1)  # (n, P)
        d2 = (
            jnp.sum(flat**2, 1)[:, None]
            - 2 * flat @ self.image_table.T
            + jnp.sum(self.image_table**2, 1)[None, :]
        )
        return self.image_truth[jnp.argmin(d2, axis=1)]

    def embed_texts(self, tokens):
        same = jnp.all(tokens[:, None, :] == self.token_table[None, :, :], axis=-1)  # (n, M)
        return jax.nn.one_hot(
            jnp.argmax(same, axis=1), self.token_table.shape[0], dtype=jnp.float32
        )


def make_oracle(suite):
    texts = sorted({t for s in suite.prompt_sets for t in s} | set(suite.retrieval.captions))
    text_id = {t: i for i, t in enumerate(texts)}
    truth: dict[bytes, set[int]] = {}
    images: dict[bytes, np.ndarray] = {}
    for task in suite.tasks:
        for image, cands, label in zip(task.images, task.candidates, task.labels):
            key = image.tobytes()
            images[key] = image
            truth.setdefault(key, set()).update(text_id[t] for t in suite.prompt_sets[cands[label]])
    for image, caption in zip(suite.retrieval.images, suite.retrieval.captions):
        images[image.tobytes()] = image
        truth.setdefault(image.tobytes(), set()).add(text_id[caption])
    keys = list(images)
    table = to_model_images(np.stack([images[k] for k in keys]), 1)[..., 0].reshape(len(keys), -1)
    rows = np.zeros((len(keys), len(texts)), np.float32)
    for r, k in enumerate(keys):
        rows[r, list(truth[k])] = 1.0 / math.sqrt(len(truth[k]))
    return OracleModel(jnp.asarray(table), jnp.asarray(rows), jnp.asarray(TOKENIZER(texts)))


class HashModel(eqx.Module):
    """A random model: fixed random projections through a fast sine, so that
    different inputs get unrelated embeddings."""

    image_proj: jax.Array
    text_proj: jax.Array

    def __init__(self, key, pixels, vocab, length, dim=64):
        k1, k2 = jax.random.split(key)
        self.image_proj = jax.random.normal(k1, (pixels, dim))
        self.text_proj = jax.random.normal(k2, (length * vocab, dim))

    @staticmethod
    def _unit(x):
        x = jnp.sin(30.0 * x)
        return x / jnp.linalg.norm(x, axis=1, keepdims=True)

    def embed_images(self, images):
        return self._unit(images.reshape(images.shape[0], -1) @ self.image_proj)

    def embed_texts(self, tokens):
        onehot = jax.nn.one_hot(
            tokens, self.text_proj.shape[0] // tokens.shape[1], dtype=jnp.float32
        )
        return self._unit(onehot.reshape(tokens.shape[0], -1) @ self.text_proj)


def test_tasks_mean_what_they_say(suite):
    names = suite.prompt_names
    positions = position_names(2, 2)
    assert tuple(t.name for t in suite.tasks) == TASK_NAMES
    for task in suite.tasks:
        assert task.images.shape == (PER_TASK, 56, 56)
        counts = np.bincount(task.labels, minlength=task.candidates.shape[1])
        assert counts.max() - counts.min() <= 1  # balanced, so a blind model scores 1/K
        for image, cands, label in zip(task.images, task.candidates, task.labels):
            cells = read_cells(image, 2, 2)
            assert {c[2] for c in cells if c is not None} == {2}  # test images only
            classes = [c[0] if c is not None else -1 for c in cells]
            items = [c for c in classes if c >= 0]
            right, wrong = (
                names[cands[label]],
                [names[c] for k, c in enumerate(cands) if k != label],
            )
            if task.name == "classify":
                assert len(items) == 1 and right == f"class:{CLASS_NAMES[items[0]]}"
            elif task.name in ("classify_at_position", "locate"):
                _, cls, where = right.split(":")
                assert classes[positions.index(where)] == CLASS_NAMES.index(cls)
                for w in wrong:
                    _, cls, where = w.split(":")
                    assert classes[positions.index(where)] != CLASS_NAMES.index(cls)
                if task.name == "locate":
                    assert (
                        len(items) == 2 and items.count(CLASS_NAMES.index(right.split(":")[1])) == 1
                    )
            elif task.name == "count":
                assert right == f"count:{len(items)}"
            elif task.name == "presence":
                assert (
                    CLASS_NAMES.index(right[6:]) in items
                    and CLASS_NAMES.index(wrong[0][6:]) not in items
                )
            elif task.name == "coarse":
                assert len(items) == 1 and task.class_names[label] == right[7:]
                assert COARSE_OF_CLASS[items[0]] == label
            elif task.name == "same_kind":
                assert len(items) == 2 and (items[0] == items[1]) == (right == "same_kind")
            elif task.name == "left_item":
                row = [g for g, c in enumerate(classes) if c >= 0]
                assert len(row) == 2 and row[0] // 2 == row[1] // 2
                assert (
                    right == f"left:{CLASS_NAMES[classes[row[0]]]}"
                    and classes[row[0]] != classes[row[1]]
                )
    assert len(set(suite.retrieval.captions)) == RETRIEVAL


def test_oracle_scores_one_everywhere(suite):
    results = evaluate(make_oracle(suite), TOKENIZER, suite, batch_size=128)
    assert set(results) == set(suite.chance_levels())
    assert results == {k: 1.0 for k in results}


def test_random_model_scores_chance(suite):
    chance = suite.chance_levels()
    models = [
        HashModel(jax.random.key(s), 56 * 56 * 3, TOKENIZER.vocab_size, TOKENIZER.max_len)
        for s in range(2)
    ]
    runs = [evaluate(m, TOKENIZER, suite, batch_size=256) for m in models]
    for name, level in chance.items():
        if name.startswith("zeroshot/"):
            # Two runs of PER_TASK images: within 4 binomial standard deviations.
            mean = np.mean([r[name] for r in runs])
            assert abs(mean - level) <= 4 * math.sqrt(level * (1 - level) / (2 * PER_TASK)), (
                name,
                mean,
                level,
            )
        elif name.startswith("retrieval/"):
            assert all(r[name] <= 4 * level for r in runs), (name, [r[name] for r in runs])
    # Padding the last batch changes nothing.
    small = evaluate(models[0], TOKENIZER, suite, batch_size=96)
    assert small == pytest.approx(runs[0], abs=1e-6)


def test_retrieval_recalls_hand_computed():
    sim = jnp.array([[0.9, 0.1, 0.95], [0.2, 0.5, 0.1], [0.3, 0.3, 0.3]])
    # image 0: text 2 beats text 0 (rank 1); image 1: right (rank 0);
    # image 2: ties with two wrong texts count against it (rank 2).
    # text 0: rank 0; text 1: rank 0; text 2: image 0 beats image 2 (rank 1).
    expected = {1: (1 / 3, 2 / 3), 2: (2 / 3, 1.0), 3: (1.0, 1.0)}
    for k, (i2t, t2i) in expected.items():
        got = retrieval_recalls(sim, k)
        assert float(got[0]) == pytest.approx(i2t) and float(got[1]) == pytest.approx(t2i)


@settings(max_examples=10)
@given(st.integers(1, 7), st.integers(0, 2**31 - 1))
def test_retrieval_recalls_match_a_plain_loop(k, seed):
    n = 6  # one shape, so the eager ops compile once
    sim = np.random.default_rng(seed).integers(0, 4, size=(n, n)).astype(np.float32)  # many ties
    i2t = np.mean([sum(sim[i, j] >= sim[i, i] for j in range(n) if j != i) < k for i in range(n)])
    t2i = np.mean([sum(sim[j, i] >= sim[i, i] for j in range(n) if j != i) < k for i in range(n)])
    got = retrieval_recalls(jnp.asarray(sim), k)
    assert float(got[0]) == pytest.approx(i2t) and float(got[1]) == pytest.approx(t2i)


def test_zero_shot_accuracy_and_prompt_ensembling():
    images = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    classes = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    candidates = jnp.array([[0, 1], [0, 1], [0, 2]])
    # Image 2 scores 0.6 and 1.0: right when label 1. Image 0 right; image 1 wrong.
    labels = jnp.array([0, 0, 1])
    assert float(zero_shot_accuracy(images, classes, candidates, labels)) == pytest.approx(2 / 3)
    tie = jnp.array([[0, 0]])  # identical candidates: a tie is an error
    assert float(zero_shot_accuracy(images[:1], classes, tie, jnp.array([0]))) == 0.0

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(7, 5)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    set_ids = np.array([0, 0, 1, 2, 2, 2, 1])
    got = np.asarray(average_prompt_embeddings(jnp.asarray(emb), jnp.asarray(set_ids), 3))
    for s in range(3):
        mean = emb[set_ids == s].mean(0)
        np.testing.assert_allclose(got[s], mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-6)


def test_suite_is_deterministic_and_validated(tmp_path):
    data_dir = write_fake_fashion_mnist(tmp_path, n_train=60, n_test=300)
    a = build_suite(seed=4, per_task=20, retrieval_size=20, data_dir=data_dir)
    b = build_suite(seed=4, per_task=20, retrieval_size=20, data_dir=data_dir)
    c = build_suite(seed=5, per_task=20, retrieval_size=20, data_dir=data_dir)
    for x, y in zip(a.tasks, b.tasks):
        np.testing.assert_array_equal(x.images, y.images)
        np.testing.assert_array_equal(x.candidates, y.candidates)
        np.testing.assert_array_equal(x.labels, y.labels)
    assert a.retrieval.captions == b.retrieval.captions and a.prompt_sets == b.prompt_sets
    assert a.retrieval.captions != c.retrieval.captions
    with pytest.raises(ValueError, match="2 columns"):
        build_suite(config=SceneConfig(rows=3, cols=1, max_items=3), data_dir=data_dir)
    with pytest.raises(ValueError, match="max_items"):
        build_suite(config=SceneConfig(min_items=2, max_items=2), data_dir=data_dir)


def test_table_and_json(suite, tmp_path):
    results = {f"zeroshot/{t}": 0.5 for t in TASK_NAMES} | {
        "retrieval/i2t_r1": 0.1,
        "retrieval/i2t_r5": 0.2,
        "retrieval/t2i_r1": 0.3,
        "retrieval/t2i_r5": 0.4,
    }
    results["average"] = float(np.mean(list(results.values())))
    table = format_table(results, suite)
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "score", "chance"]
    assert lines[-1].split() == [
        "average",
        f"{100 * results['average']:.1f}%",
        f"{100 * suite.chance_levels()['average']:.1f}%",
    ]
    assert (
        "zeroshot/count" in table
        and "25.0%" in table
        and "retrieval/i2t_r5" in table
        and "5.0%" in table
    )
    path = write_json(
        results, tmp_path / "out" / "eval.json", suite=suite, metadata={"checkpoint": "ckpt/7"}
    )
    record = json.loads(path.read_text())
    assert record["scores"] == results and record["metadata"] == {"checkpoint": "ckpt/7"}
    assert (
        record["chance"]["zeroshot/presence"] == 0.5
        and record["suite"]["retrieval_size"] == RETRIEVAL
    )


def test_real_two_tower_runs_through_the_suite(tmp_path):
    models = pytest.importorskip("aced.models")
    data_dir = write_fake_fashion_mnist(tmp_path, n_train=60, n_test=200)
    small = build_suite(seed=1, per_task=8, retrieval_size=8, channels=3, data_dir=data_dir)
    config = models.TwoTowerConfig.from_variants(
        image_variant="mu/7",
        text_variant="mu",
        embed_dim=32,
        image_size=56,
        vocab_size=TOKENIZER.vocab_size,
        max_len=TOKENIZER.max_len,
    )
    model = models.TwoTower(config, key=jax.random.key(0))
    results = evaluate(model, TOKENIZER, small, batch_size=16)
    assert set(results) == set(small.chance_levels())
    assert all(0.0 <= v <= 1.0 for v in results.values())
    assert results["average"] == pytest.approx(
        np.mean([v for k, v in results.items() if k != "average"])
    )
