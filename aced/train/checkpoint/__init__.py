"""Checkpoints for exact resume, and model files (``config.json`` + ``model.safetensors``).

A training checkpoint is one step directory ``<run>/checkpoints/<step>/`` holding

- ``state/``: every array leaf of the `TrainState` (learner, projection,
  optimiser state, step, and the PRNG key as its raw key data), packed by
  dtype into one flat array each (``float32``, ``int32``, ``uint32``, ...),
  written by orbax's `StandardCheckpointHandler` (tensorstore); orbax's cost
  is mostly per array, so a few flat arrays save faster than one array per
  leaf (`benchmarks/loop_overhead.py --breakdown` times the saves);
- ``meta/metadata``: aced's JSON record: the step, the data iterator's
  position, the `RunConfig`, the cumulative training FLOPs, the last metrics,
  every leaf under its flat name (``jax.tree_util.keystr``) with its shape,
  dtype, offset in its packed array and CRC32, and the size and CRC32 of every
  file in ``state/`` (so that a damaged file is named before tensorstore reads
  it, and cannot restore silently). Checkpoints of format 1 (one orbax array per
  leaf, written before aced packed them) restore too.

aced owns the step directory; orbax only writes ``state/`` inside it. A save
fills ``<step>.partial/`` and renames it to ``<step>/`` once the record is on
disk, so a run killed at any moment of a save, or a save that fails (a full
disk), leaves no step directory that `restore_checkpoint` would read; old steps
are renamed to ``<step>.deleting`` before their removal, so an interrupted
clean-up leaves no half-deleted step either. `open_checkpoints` removes such
leftovers. Whatever orbax or tensorstore raise (their errors differ between
versions), a failed save or restore is a `CheckpointError` that names the path
and what to do. Nothing is ever unpickled: arrays come from tensorstore,
everything else from JSON.

The modules: `layout` (names, `CheckpointError`, listing, clean-up), `save`,
`restore` and `model_files`; everything public is imported here.

Model files hold one `TwoTower` for inference, export or use as a reference
(`aced.models.serialization`): the `TwoTowerConfig` as JSON and the arrays
as safetensors.
"""

from aced.train.checkpoint.layout import (
    CHECKPOINTS,
    FORMAT,
    PAUSE_ENV,
    RECORD,
    STATE,
    CheckpointError,
    Checkpoints,
    checkpoint_steps,
    open_checkpoints,
)
from aced.train.checkpoint.model_files import is_model_dir, load_model, save_model
from aced.train.checkpoint.restore import read_meta, restore_checkpoint
from aced.train.checkpoint.save import save_checkpoint, write_record

__all__ = [
    "CHECKPOINTS",
    "FORMAT",
    "PAUSE_ENV",
    "RECORD",
    "STATE",
    "CheckpointError",
    "Checkpoints",
    "checkpoint_steps",
    "is_model_dir",
    "load_model",
    "open_checkpoints",
    "read_meta",
    "restore_checkpoint",
    "save_checkpoint",
    "save_model",
    "write_record",
]
