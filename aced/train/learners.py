"""Trained learners read back: from a run directory (its latest checkpoint,
else its exported ``model/``), one checkpoint step, or a model directory.

Run directory layout (`aced.train.loop.train` writes it): ``run_config.json``,
``checkpoints/<step>/``, ``metrics.jsonl``, ``tb/``, ``eval.json``,
``model/`` (`save_model` files plus ``tokenizer.json``), ``reference/``.
"""

import json
import pathlib

import equinox as eqx
import jax

from aced.data import TextTokenizer, builtin_tokenizer, load_tokenizer
from aced.models import TwoTower, TwoTowerConfig
from aced.train.checkpoint import (
    checkpoint_steps,
    is_model_dir,
    load_model,
    read_meta,
    restore_checkpoint,
)
from aced.train.config import RunConfig, from_dict
from aced.train.inputs import build_tokenizer
from aced.train.state import TrainState, init_train_state

MODEL_DIR = "model"
TOKENIZER_FILE = "tokenizer.json"
RUN_CONFIG_FILE = "run_config.json"


def template_state(model: TwoTowerConfig, run: RunConfig, teacher_width: int | None) -> TrainState:
    """The abstract (``jax.ShapeDtypeStruct``) `TrainState` of a run, to restore
    checkpoints into."""

    def build() -> TrainState:
        learner = TwoTower(model, key=jax.random.key(0))
        return init_train_state(learner, run.step, jax.random.key(0), teacher_width=teacher_width)

    return eqx.filter_eval_shape(build)


def load_learner(path: str | pathlib.Path) -> tuple[TwoTower, TextTokenizer, RunConfig | None]:
    """The learner saved at `path`, its tokenizer, and its run config when known.

    `path` is a model directory (``config.json`` + ``model.safetensors``), a
    run directory (its latest checkpoint; ``model/`` when it has none) or one
    step directory ``<run>/checkpoints/<step>``.
    """
    path = pathlib.Path(path)
    step = None
    if path.parent.name == "checkpoints" and path.name.isdigit():
        path, step = path.parent.parent, int(path.name)
    if checkpoint_steps(path):
        meta = read_meta(path, step)
        run = from_dict(RunConfig, meta["run_config"])
        template = template_state(
            TwoTowerConfig.from_dict(meta["model"]), run, meta.get("teacher_width")
        )
        state, _ = restore_checkpoint(path, template, step=meta["step"])
        return state.learner, build_tokenizer(run), run
    model_dir = path if is_model_dir(path) else path / MODEL_DIR
    if not is_model_dir(model_dir):
        raise FileNotFoundError(
            f"{path} holds neither checkpoints nor model files (config.json + model.safetensors); "
            "pass a run directory of `aced train`, its model/ folder, or a converted model"
        )
    model = load_model(model_dir)
    run = None
    if (model_dir.parent / RUN_CONFIG_FILE).is_file():
        run = from_dict(RunConfig, json.loads((model_dir.parent / RUN_CONFIG_FILE).read_text()))
    if (model_dir / TOKENIZER_FILE).is_file():
        tokenizer = load_tokenizer(model_dir / TOKENIZER_FILE)
    else:
        tokenizer = builtin_tokenizer(max_len=model.config.text.max_len)
    return model, tokenizer, run
