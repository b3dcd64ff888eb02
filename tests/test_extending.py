"""The three forks of ``docs/extending.md``, run as written there, each one function + one
registration: a pair score (dense = blocked in an ACID step), a selection rule, and a KD
loss chosen by ``step.distill.loss=`` in ``aced train --plugin``."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from step_problem import OPTIM, step_config, tiny_batch, tiny_models
from test_loop import micro_overrides

from aced.losses import KD_LOSSES
from aced.selection import (
    PAIR_SCORES,
    SELECTION_RULES,
    chunk_supports,
    joint_select,
    joint_select_blocked,
    per_example_scores,
    sample_top_k,
    score_matrix,
)
from aced.selection.jest import dense_terms
from aced.train.config import SelectionConfig
from aced.train.curation import curate
from aced.types import Embedded

DOC = pathlib.Path(__file__).parents[1] / "docs" / "extending.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
NAMES = {
    "margin": PAIR_SCORES,
    "jest_sqrt_normalised": SELECTION_RULES,
    "similarity_l1": KD_LOSSES,
}


@pytest.fixture(scope="module")
def forks():
    """Each python block of the doc, executed in its own namespace; unregistered afterwards."""
    assert len(BLOCKS) == 3, "docs/extending.md should hold the three forks"
    spaces = []
    for block in BLOCKS:
        space: dict = {}
        exec(compile(block, str(DOC), "exec"), space)
        spaces.append(space)
    yield spaces
    for name, registry in NAMES.items():
        registry.pop(name, None)


def views(seed: int, n: int) -> tuple[Embedded, Embedded]:
    rng = np.random.default_rng(seed)
    out = []
    for d, t, b in ((5, 10.0, -8.0), (7, 12.0, -9.0)):
        z = rng.standard_normal((2, n, d))
        z /= np.linalg.norm(z, axis=2, keepdims=True)
        out.append(
            Embedded(
                jnp.asarray(z[0], jnp.float32),
                jnp.asarray(z[1], jnp.float32),
                jnp.float32(t),
                jnp.float32(b),
            )
        )
    return out[0], out[1]


def test_margin_score_from_one_entry(forks):
    learner, reference = views(0, 40)
    l_loss = score_matrix(learner, reference, "hard_learner")
    r_loss = -score_matrix(learner, reference, "easy_reference")
    np.testing.assert_allclose(
        score_matrix(learner, reference, "margin"), l_loss - 0.5 * r_loss, rtol=1e-6, atol=1e-5
    )
    np.testing.assert_allclose(
        per_example_scores(learner, reference, "margin"),
        jnp.diagonal(l_loss - 0.5 * r_loss),
        rtol=1e-5,
        atol=1e-5,
    )
    key = jax.random.key(3)
    dense = joint_select(key, score_matrix(learner, reference, "margin"), 16, 4)
    blocked = joint_select_blocked(key, learner, reference, "margin", 16, 4)
    np.testing.assert_array_equal(dense, blocked)


def test_margin_acid_step_dense_and_blocked_select_the_same(forks):
    learner, reference = tiny_models()
    batch = tiny_batch()
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    chosen = []
    for implementation in ("dense", "blocked"):
        config = step_config(
            "acid",
            optim=OPTIM,
            selection=SelectionConfig(
                score="margin", filter_ratio=0.5, n_chunks=4, implementation=implementation
            ),
        )
        curated, metrics = jax.jit(
            lambda k, lrn, ref, bt, c=config: curate(k, lrn, ref, bt, c, mesh)
        )(jax.random.key(1), learner, reference, batch)
        chosen.append(np.asarray(curated.indices))
        assert metrics["score/selected_mean"] > metrics["score/all_mean"]
    np.testing.assert_array_equal(*chosen)
    assert len(set(chosen[0].tolist())) == 16


def test_sqrt_normalised_rule_divides_each_chunk_by_sqrt_2q_plus_1(forks):
    rule = SELECTION_RULES["jest_sqrt_normalised"]
    logits = jnp.asarray(np.random.default_rng(1).normal(0, 3, 30), jnp.float32)
    key = jax.random.key(4)
    for n_chosen in (0, 4, 12):
        got = rule.draw(key, logits, jnp.int32(n_chosen), 4)
        scale = jnp.sqrt(jnp.float32(2 * n_chosen + 1))
        np.testing.assert_array_equal(got, sample_top_k(key, logits / scale, 4))
    scores = score_matrix(*views(2, 48), "learnability")
    normalised = np.asarray(joint_select(key, scores, 24, 6, rule="jest_sqrt_normalised"))
    plain = np.asarray(joint_select(key, scores, 24, 6, rule="jest"))
    np.testing.assert_array_equal(normalised[:4], plain[:4])  # |Q| = 0: the same first chunk
    assert len(set(normalised.tolist())) == 24
    assert not np.array_equal(normalised, plain)
    # It says what it samples from, so its chunks' effective support is logged; with the
    # damped logits the last chunk keeps more candidates than plain JEST's.
    supports = {
        name: np.asarray(chunk_supports(*dense_terms(scores, 24, 6), jnp.asarray(idx), 6, name))
        for name, idx in (("jest_sqrt_normalised", normalised), ("jest", plain))
    }
    assert supports["jest_sqrt_normalised"][0] == supports["jest"][0]
    assert supports["jest_sqrt_normalised"][-1] > supports["jest"][-1]


def test_similarity_l1_kd_through_aced_train(forks, tmp_path, capsys):
    from aced.cli import main

    plugin = tmp_path / "my_kd.py"
    plugin.write_text(BLOCKS[2])
    del KD_LOSSES["similarity_l1"]  # the CLI must register it again from the file
    # The loop tests' tiny run (IID settings: f = 0, a 2-step reference), as KD.
    overrides = [*micro_overrides(tmp_path / "run", 2), "step.distill.loss=similarity_l1"]
    assert main(["train", "--plugin", str(plugin), "--preset", "kd", *overrides]) == 0
    # the reference it trained first is reported apart from its own training FLOPs
    assert "training FLOPs (+ " in capsys.readouterr().out
    assert "similarity_l1" in KD_LOSSES
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    import json

    last = [json.loads(line) for line in lines if "loss/kd" in line][-1]
    assert last["loss/kd"] > 0
    assert main(["train", "--preset", "kd", "step.distill.loss=nope", *overrides[:-1]]) == 2


def test_a_missing_plugin_is_a_usage_error(tmp_path, capsys):
    from aced.cli import main

    assert main(["train", "--plugin", str(tmp_path / "nope.py"), "--preset", "kd"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["train", "--plugin", "no_such_module_here", "--preset", "kd"]) == 2
    assert "importable module" in capsys.readouterr().err
