# Transitional: the names moved to aced.train.config; removed once every importer is updated.
from aced.train.config import *  # noqa: F401,F403
from aced.train.config import BUILTIN_IMAGE_SIZE, apply_overrides, TrainConfig  # noqa: F401
from aced.train.config import config_fields, from_dict, preset, reference_run, to_dict  # noqa: F401
from aced.train.config import DataConfig, RunConfig, PRESETS  # noqa: F401

override = apply_overrides
LoopConfig = TrainConfig
