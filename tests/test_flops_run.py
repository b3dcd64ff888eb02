"""A run's FLOP bookkeeping: the cache pass charged once (not again on resume), and
the reference's own training reported apart (``reference_flops``).

The loop tests' tiny KD run with cached reference embeddings and a 2-step
reference trained first. The step, the cache pass and the evaluation are
stand-ins (no compilation): what is under test is what the loop adds up and
where it writes it; `tests/test_flops.py` checks the counts themselves.
"""

import json
import pathlib
import shutil

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_loop import micro_run, records

from aced.flops import reference_cache_flops
from aced.models import TwoTower
from aced.train import Curated, embedding_cache, loop
from aced.train.checkpoint import load_model
from aced.train.reference import reference_training_flops

REFERENCE_STEP, LEARNER_STEP = 1000.0, 10.0  # the stand-in step's flops, by run


def stand_in_step(config, mesh):
    flops = REFERENCE_STEP if config.method == "iid" else LEARNER_STEP

    def step(state, batch, reference):
        metrics = {"loss/total": jnp.float32(1.0), "flops": jnp.float32(flops)}
        chosen = jnp.arange(config.sub_batch_size(batch.images.shape[0]), dtype=jnp.int32)
        return (
            eqx.tree_at(lambda s: s.step, state, state.step + 1),
            metrics,
            Curated(chosen, None, None),
        )

    return step


def stand_in_cache(reference, source, tokenizer, **kwargs):
    width = reference.config.embed_dim
    return (np.zeros((len(source), width), np.float32),) * 2


@pytest.fixture
def stand_ins(monkeypatch):
    def zeros(config, *, key):  # weights of the right shapes: no initialisation to compile
        skeleton = eqx.filter_eval_shape(TwoTower, config, key=key)
        return jax.tree.map(
            lambda x: (
                jax.device_put(np.zeros(x.shape, x.dtype))
                if isinstance(x, jax.ShapeDtypeStruct)
                else x
            ),
            skeleton,
        )

    monkeypatch.setattr(loop, "TwoTower", zeros)
    monkeypatch.setattr(loop, "compiled_step", stand_in_step)
    monkeypatch.setattr(embedding_cache, "cache_reference_embeddings", stand_in_cache)
    monkeypatch.setattr(loop, "build_evaluation", lambda run: StandInEvaluation())


class StandInEvaluation:
    """Scores every evaluation 0.5, on no suite."""

    suite = None

    def __call__(self, *args, **kwargs):
        return {"average": 0.5}


def test_cache_pass_is_charged_once_and_the_reference_cost_reported(stand_ins, tmp_path):
    run = micro_run(tmp_path, 2, preset_name="kd")
    assert run.step.reference_embeddings == "cached" and not run.reference.path
    result = train_and_check(run)
    reference = load_model(tmp_path / "reference" / "model").config
    # N = every training example; captions of the (shared) tokenizer's length
    cache = float(reference_cache_flops(reference, run.data.size, run.model.max_len))
    assert result["reference_cache_flops"] == cache > 0
    assert result["reference_flops"] == 2 * REFERENCE_STEP and result["reference_flops_known"]
    assert result["flops_cumulative"] == cache + 2 * LEARNER_STEP
    steps = [r for r in records(tmp_path) if "loss/total" in r]
    assert [r["flops_cumulative"] for r in steps] == [
        cache + LEARNER_STEP,
        cache + 2 * LEARNER_STEP,
    ]
    metadata = json.loads((tmp_path / "eval.json").read_text())["metadata"]
    assert metadata["flops_cumulative"] == result["flops_cumulative"]
    assert metadata["reference_flops"] == 2 * REFERENCE_STEP

    resumed = train_and_check(micro_run(tmp_path, 4, preset_name="kd"))  # from step 2
    assert resumed["flops_cumulative"] == cache + 4 * LEARNER_STEP  # no second cache pass
    assert resumed["reference_flops"] == 2 * REFERENCE_STEP  # the reference is not retrained

    # Where a reference came from decides what is known of its cost.
    ref_dir = tmp_path / "reference"
    for origin in (ref_dir, ref_dir / "model", ref_dir / "checkpoints" / "2"):
        assert reference_training_flops(str(origin)) == (2 * REFERENCE_STEP, True)
    # A model folder with no run of its own (here inside the learner's run directory).
    shutil.copytree(ref_dir / "model", tmp_path / "bare")
    assert reference_training_flops(str(tmp_path / "bare")) == (0.0, False)


def train_and_check(run):
    result = loop.train(run)
    assert not result["interrupted"]
    for record in records(pathlib.Path(run.train.out_dir)):
        assert record["reference_flops"] == result["reference_flops"]
    return result
