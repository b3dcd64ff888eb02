"""The one configuration tree of aced: frozen, keyword-only, validated dataclasses.

``RunConfig`` (`run`) holds the ``StepConfig`` (`step`: method, selection,
distillation, optimiser) and the learner, data, loop and reference configs.
One override mechanism (`fields`: `updated` with typed values,
`apply_overrides` with ``key=value`` strings, `to_dict` / `from_dict`) and
one preset table (`presets`: `PRESETS`, `preset`).
"""

from aced.train.config.fields import (
    apply_overrides,
    config_fields,
    from_dict,
    migrate,
    to_dict,
    updated,
)
from aced.train.config.presets import PRESETS, method_step, preset, reference_run
from aced.train.config.run import (
    BUILTIN_IMAGE_SIZE,
    FILE_SOURCES,
    DataConfig,
    ModelConfig,
    ReferenceConfig,
    RunConfig,
    TrainConfig,
)
from aced.train.config.step import (
    METHODS,
    DistillConfig,
    Method,
    OptimConfig,
    SelectionConfig,
    StepConfig,
)

__all__ = [
    "BUILTIN_IMAGE_SIZE",
    "FILE_SOURCES",
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
    "TrainConfig",
    "apply_overrides",
    "config_fields",
    "from_dict",
    "method_step",
    "migrate",
    "preset",
    "reference_run",
    "to_dict",
    "updated",
]
