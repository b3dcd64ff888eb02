"""Checkpoints for exact resume (orbax), and model files (``config.json`` + ``model.safetensors``).

A training checkpoint is one step directory of an orbax ``CheckpointManager``
(``<run>/checkpoints/<step>/``) with two items:

- ``state``: every array leaf of the `TrainState` (learner, projection,
  optimiser state, step, and the PRNG key as its raw key data), written by
  orbax's tensorstore backend under flat names (``jax.tree_util.keystr``).
- ``meta``: JSON with the step, the data iterator's position, the
  `RunConfig`, the cumulative training FLOPs, the last metrics and a CRC32
  of every array (so that a corrupted file cannot restore silently).

orbax writes a step into ``<step>.orbax-checkpoint-tmp`` and renames it when
complete, so a run killed mid-save leaves no step directory that `restore`
would pick up; a failed save (e.g. a full disk) waits for orbax's writer
threads and removes the temporary directory. Nothing is ever unpickled:
arrays come from tensorstore, everything else from JSON.

Model files hold one `TwoTower` for inference, export or use as a reference
(`aced.models.serialization`): the `TwoTowerConfig` as JSON and the arrays
as safetensors.
"""

import errno
import json
import os
import pathlib
import shutil
import threading
import zlib
from typing import Any

import equinox as eqx
import jax
import numpy as np
import orbax.checkpoint as ocp

from aced.models import TwoTower
from aced.models.serialization import ARRAYS_FILE, CONFIG_FILE, load_two_tower, save_two_tower
from aced.train.state import TrainState

CHECKPOINTS = "checkpoints"
FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint or model directory cannot be written or read."""


def _is_leaf_array(x: Any) -> bool:
    return eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def _split_state(state: TrainState) -> tuple[dict[str, Any], Any, Any]:
    """``({name: array}, treedef, static)``: the state's arrays by name, key as key data."""
    arrays, static = eqx.partition(state, _is_leaf_array)
    key = state.key
    key_data = (
        jax.eval_shape(jax.random.key_data, key)
        if isinstance(key, jax.ShapeDtypeStruct)
        else jax.random.key_data(key)
    )
    arrays = eqx.tree_at(lambda s: s.key, arrays, key_data)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(arrays)
    return {jax.tree_util.keystr(path): leaf for path, leaf in leaves}, treedef, static


def _crc(array: Any) -> int:
    return zlib.crc32(np.ascontiguousarray(np.asarray(array)).tobytes())


def open_checkpoints(run_dir: str | os.PathLike, *, keep: int) -> ocp.CheckpointManager:
    """The orbax manager of ``<run_dir>/checkpoints``, keeping the latest `keep` steps.

    Saves are synchronous (the step returns once the checkpoint is on disk),
    and temporary directories left by a killed run are removed on opening.
    """
    if keep < 1:
        raise ValueError(f"keep={keep} must be >= 1")
    directory = pathlib.Path(run_dir).absolute() / CHECKPOINTS
    if directory.is_dir() and jax.process_index() == 0:
        for partial in directory.glob("*.orbax-checkpoint-tmp*"):
            shutil.rmtree(partial, ignore_errors=True)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=True)
    return ocp.CheckpointManager(directory, options=options)


def checkpoint_steps(run_dir: str | os.PathLike) -> list[int]:
    """Steps of the complete checkpoints under ``<run_dir>/checkpoints`` (oldest first)."""
    directory = pathlib.Path(run_dir).absolute() / CHECKPOINTS
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def save_checkpoint(manager: ocp.CheckpointManager, state: TrainState, meta: dict[str, Any]) -> int:
    """Write `state` and the JSON-serialisable `meta` as the checkpoint of ``state.step``.

    **Arguments:**

    - `manager`: from `open_checkpoints`.
    - `state`: the training state after ``state.step`` steps.
    - `meta`: data iterator position, run config, FLOPs, metrics (anything JSON).

    **Returns:** the step saved. Raises `CheckpointError` when the write fails
    (disk full, permissions), after removing the partial step; the previous
    checkpoints are untouched.
    """
    step = int(state.step)
    if step in manager.all_steps():
        return step
    arrays, _, _ = _split_state(state)
    # Host copies: the state is replicated, and orbax's replica-parallel writer
    # would compile a slicing program per array and replica.
    arrays = {name: np.asarray(a) for name, a in arrays.items()}
    record = {
        **meta,
        "format": FORMAT,
        "step": step,
        "key_impl": str(jax.random.key_impl(state.key)),
        "arrays": {
            name: {"shape": list(a.shape), "dtype": str(a.dtype), "crc32": _crc(a)} for name, a in arrays.items()
        },
    }
    args = ocp.args.Composite(state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(record))
    threads = set(threading.enumerate())
    try:
        manager.save(step, args=args, force=True)
        manager.wait_until_finished()
    except Exception as error:
        _discard_partial(manager.directory, step, threads)
        kept = [s for s in manager.all_steps() if s != step]
        cause = "the disk is full" if getattr(error, "errno", None) == errno.ENOSPC else "the write failed"
        previous = f"the previous checkpoint (step {max(kept)}) is intact" if kept else "no earlier checkpoint exists"
        raise CheckpointError(
            f"saving the checkpoint of step {step} to {manager.directory} failed: {cause} ({error}); "
            f"{previous}. Free disk space (or lower train.keep_checkpoints) and rerun the same "
            "command to resume from the latest checkpoint"
        ) from error
    return step


def _discard_partial(directory: Any, step: int, threads_before: set[threading.Thread]) -> None:
    _join_new_threads(threads_before)
    root = pathlib.Path(str(directory))
    for partial in root.glob(f"{step}.orbax-checkpoint-tmp*"):
        shutil.rmtree(partial, ignore_errors=True)
    # The step did not exist before this save (see `save_checkpoint`), so a
    # directory under its final name is this failed save's, and incomplete.
    shutil.rmtree(root / str(step), ignore_errors=True)


def _join_new_threads(before: set[threading.Thread]) -> None:
    # After a failure orbax may still run helper threads (writing metadata,
    # reading other arrays); wait for those started since `before` so that
    # nothing writes into a directory being removed or outlives the error.
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=30)


def _unreadable(path: pathlib.Path, step: int, reason: str, run_dir: pathlib.Path) -> CheckpointError:
    others = [s for s in checkpoint_steps(run_dir) if s != step]
    older = (
        f"delete {path} to resume from an older step ({', '.join(map(str, others))})"
        if others
        else "no older checkpoint exists"
    )
    return CheckpointError(
        f"checkpoint {path} cannot be restored: {reason}. It is truncated or corrupted: "
        f"{older}, or start afresh with another train.out_dir"
    )


def _resolve_step(run_dir: pathlib.Path, step: int | None) -> int:
    steps = checkpoint_steps(run_dir)
    if not steps:
        raise CheckpointError(f"no checkpoint in {run_dir / CHECKPOINTS}; train first (aced train ...)")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise CheckpointError(f"no checkpoint of step {step} in {run_dir / CHECKPOINTS}; available: {steps}")
    return step


def read_meta(run_dir: str | os.PathLike, step: int | None = None) -> dict[str, Any]:
    """The JSON record of a checkpoint (latest by default), without its arrays."""
    run_dir = pathlib.Path(run_dir).absolute()
    step = _resolve_step(run_dir, step)
    path = run_dir / CHECKPOINTS / str(step) / "meta" / "metadata"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise _unreadable(path.parent.parent, step, f"its meta record {path} is unreadable ({error})", run_dir)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise _unreadable(path.parent.parent, step, f"{path} is not an aced checkpoint record", run_dir)
    return record


def restore_checkpoint(
    run_dir: str | os.PathLike, template: TrainState, *, step: int | None = None
) -> tuple[TrainState, dict[str, Any]]:
    """Restore a checkpoint into the structure of `template`.

    **Arguments:**

    - `run_dir`: the run directory (holding ``checkpoints/``).
    - `template`: a `TrainState` of the same configuration (concrete arrays,
      whose shardings are reused, or ``jax.ShapeDtypeStruct`` leaves).
    - `step`: the step to restore; the latest when None.

    **Returns:** ``(state, meta)``. Raises `CheckpointError` naming the path
    when the checkpoint is missing, truncated, corrupted or of another shape.
    """
    run_dir = pathlib.Path(run_dir).absolute()
    meta = read_meta(run_dir, step)
    step = int(meta["step"])
    path = run_dir / CHECKPOINTS / str(step)
    names, treedef, static = _split_state(template)

    def abstract(x: Any) -> jax.ShapeDtypeStruct:
        sharding = getattr(x, "sharding", None) or jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    targets = {name: abstract(x) for name, x in names.items()}
    stored = meta["arrays"]
    different = [
        f"{name}: {stored[name]['dtype']}{tuple(stored[name]['shape'])} saved, "
        f"{targets[name].dtype}{targets[name].shape} expected"
        for name in sorted(set(stored) & set(targets))
        if (stored[name]["dtype"], tuple(stored[name]["shape"])) != (str(targets[name].dtype), targets[name].shape)
    ]
    missing, extra = sorted(set(targets) - set(stored)), sorted(set(stored) - set(targets))
    if missing or extra or different:
        raise CheckpointError(
            f"checkpoint {path} holds another model or optimiser than the configuration "
            f"(missing {missing[:3]}, unexpected {extra[:3]}, different {different[:2]}); restore it "
            "with the run config it was saved with, or start afresh with another train.out_dir"
        )
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    threads = set(threading.enumerate())
    try:
        with ocp.CheckpointManager(run_dir / CHECKPOINTS, options=options) as manager:
            restored = manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(targets))
            )["state"]
    except Exception as error:  # orbax and tensorstore raise many types for a damaged file
        _join_new_threads(threads)
        raise _unreadable(path, step, str(error).split("\n")[0][:300], run_dir) from error
    for name in targets:
        if _crc(restored[name]) != stored[name]["crc32"]:
            raise _unreadable(path, step, f"array {name} does not match its checksum", run_dir)
    arrays = jax.tree_util.tree_unflatten(treedef, [restored[name] for name in names])
    key = jax.random.wrap_key_data(arrays.key, impl=meta["key_impl"])
    arrays = eqx.tree_at(lambda s: s.key, arrays, key)
    return eqx.combine(arrays, static), meta


def save_model(model: TwoTower, directory: str | os.PathLike, *, extra_files: tuple = ()) -> pathlib.Path:
    """Write a `TwoTower` as ``config.json`` + ``model.safetensors`` (`aced.models.serialization`).

    **Arguments:**

    - `model`: the model; `directory`: replaced atomically if it exists.
    - `extra_files`: files copied in (e.g. ``tokenizer.json``).

    **Returns:** the directory. Raises `CheckpointError` when the write fails.
    """
    try:
        return save_two_tower(model, directory, overwrite=True, extra_files=extra_files)
    except OSError as error:
        raise CheckpointError(f"writing the model to {directory} failed: {error}") from error


def is_model_dir(path: str | os.PathLike) -> bool:
    """Whether `path` holds model files (``config.json`` + ``model.safetensors``)."""
    path = pathlib.Path(path)
    return (path / CONFIG_FILE).is_file() and (path / ARRAYS_FILE).is_file()


def load_model(directory: str | os.PathLike) -> TwoTower:
    """Read a `TwoTower` written by `save_model` (or ``aced convert``); never unpickles.

    Raises `FileNotFoundError` when a file is missing and `CheckpointError`
    naming the directory when one is unreadable or does not fit its config.
    """
    directory = pathlib.Path(directory)
    for name in (CONFIG_FILE, ARRAYS_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"{directory / name} not found: a model directory holds {CONFIG_FILE} and "
                f"{ARRAYS_FILE} (written at the end of `aced train` under <out_dir>/model, "
                "or by `aced convert`)"
            )
    try:
        return load_two_tower(directory)
    except Exception as error:  # JSON, config validation, safetensors header, shape mismatch
        raise CheckpointError(
            f"model files in {directory} are unreadable ({str(error)[:300]}); they are truncated "
            "or corrupted, or were written for another config: export or convert the model again"
        ) from error
