"""Training: the one configuration tree, the train state, the step, and the loop.

The public names of the library layer are here; the loop and its pieces
(`aced.train.loop.train`, `inputs`, `reference`, `logs`, `learners`,
`evaluation`, `checkpoint`) are imported from their modules, so that
``aced eval`` and library users need not load the training loop.
"""

from aced.train.config import (
    METHODS,
    PRESETS,
    DataConfig,
    DistillConfig,
    Method,
    ModelConfig,
    OptimConfig,
    ReferenceConfig,
    RunConfig,
    SelectionConfig,
    StepConfig,
    TrainConfig,
    apply_overrides,
    config_fields,
    from_dict,
    preset,
    reference_run,
    to_dict,
    updated,
)
from aced.train.curation import Curated, curate, embedded, reference_view, select_indices
from aced.train.sharding import AXIS, default_mesh, embed_sharded, replicate, shard_batch
from aced.train.state import SuperBatch, TrainState, init_train_state, make_optimizer
from aced.train.step import (
    learner_update,
    make_train_step,
    step_flops,
    train_step,
    train_step_with_indices,
    train_step_with_selection,
)

__all__ = [
    "AXIS",
    "Curated",
    "METHODS",
    "PRESETS",
    "DataConfig",
    "DistillConfig",
    "Method",
    "ModelConfig",
    "OptimConfig",
    "ReferenceConfig",
    "RunConfig",
    "SelectionConfig",
    "StepConfig",
    "SuperBatch",
    "TrainConfig",
    "TrainState",
    "apply_overrides",
    "config_fields",
    "curate",
    "default_mesh",
    "embed_sharded",
    "embedded",
    "from_dict",
    "init_train_state",
    "learner_update",
    "make_optimizer",
    "make_train_step",
    "preset",
    "reference_run",
    "reference_view",
    "replicate",
    "select_indices",
    "shard_batch",
    "step_flops",
    "to_dict",
    "train_step",
    "train_step_with_indices",
    "train_step_with_selection",
    "updated",
]
