"""Checkpoints for exact resume, and model files (``config.json`` + ``model.safetensors``).

A training checkpoint is one step directory ``<run>/checkpoints/<step>/`` holding

- ``state/``: every array leaf of the `TrainState` (learner, projection,
  optimiser state, step, and the PRNG key as its raw key data) under flat
  names (``jax.tree_util.keystr``), written by orbax's `StandardCheckpointHandler`
  (tensorstore);
- ``meta/metadata``: aced's JSON record: the step, the data iterator's
  position, the `RunConfig`, the cumulative training FLOPs, the last metrics,
  a CRC32 of every array and the size and CRC32 of every file in ``state/``
  (so that a damaged file is named before tensorstore reads it, and cannot
  restore silently).

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

Model files hold one `TwoTower` for inference, export or use as a reference
(`aced.models.serialization`): the `TwoTowerConfig` as JSON and the arrays
as safetensors.
"""

import dataclasses
import errno
import json
import os
import pathlib
import re
import shutil
import time
import zlib
from typing import Any

import equinox as eqx
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from aced.models import TwoTower
from aced.models.serialization import ARRAYS_FILE, CONFIG_FILE, load_two_tower, save_two_tower
from aced.train.state import TrainState

CHECKPOINTS = "checkpoints"
STATE = "state"
RECORD = pathlib.Path("meta", "metadata")  # where orbax's JSON item put it before aced wrote it
FORMAT = 1
# In-progress saves and clean-ups (and the temporary directories of orbax's own manager,
# which wrote aced's checkpoints before): never a step, removed by `open_checkpoints`.
_LEFTOVER = re.compile(r"\d+\.(partial|deleting|orbax-checkpoint-tmp.*)")
# Test-only: "<step>:<file>" makes the save of <step> stop after orbax has written the
# arrays into ``<step>.partial/``, create <file> and sleep, so that a test can kill it there.
PAUSE_ENV = "ACED_TEST_PAUSE_SAVE"


class CheckpointError(RuntimeError):
    """A checkpoint or model directory cannot be written or read."""


@dataclasses.dataclass(frozen=True)
class Checkpoints:
    """The checkpoint directory of a run and how many of its latest steps to keep.

    Every save and restore opens and closes its own orbax checkpointer, so
    there is nothing to release; `close` and ``with`` exist for the callers.
    """

    directory: pathlib.Path
    keep: int

    def all_steps(self) -> list[int]:
        return _complete_steps(self.directory)

    def close(self) -> None:
        pass

    def __enter__(self) -> "Checkpoints":  # noqa: PYI034 (beartype refuses Self here)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


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


def _complete_steps(directory: pathlib.Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _sync(name: str) -> None:
    # Only the first process writes aced's own files; the others wait for it.
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _fsync_dir(path: pathlib.Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else ""
    text = text if len(text) <= 240 else text[:240] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _file_crc(path: pathlib.Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def _file_list(root: pathlib.Path) -> dict[str, list[int]]:
    """``{path relative to root: [bytes, crc32]}`` of every file under `root`."""
    return {
        path.relative_to(root).as_posix(): [path.stat().st_size, _file_crc(path)]
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _damaged_file(root: pathlib.Path, files: dict[str, Any]) -> str | None:
    """What is wrong with the first file of `files` (from `_file_list`) that differs on disk."""
    for name, (size, crc) in files.items():
        path = root / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != size:
            return f"{path} holds {path.stat().st_size} bytes, not the {size} written"
        if _file_crc(path) != crc:
            return f"{path} does not match its checksum"
    return None


def open_checkpoints(run_dir: str | os.PathLike, *, keep: int) -> Checkpoints:
    """The checkpoints of ``<run_dir>/checkpoints``, keeping the latest `keep` steps.

    Saves are synchronous (the step returns once the checkpoint is on disk).
    Opening removes what a killed run left: partial steps and clean-ups.
    """
    if keep < 1:
        raise ValueError(f"keep={keep} must be >= 1")
    directory = pathlib.Path(run_dir).absolute() / CHECKPOINTS
    if jax.process_index() == 0:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CheckpointError(
                f"cannot create {directory} ({error}); choose another train.out_dir"
            ) from error
        for leftover in directory.iterdir():
            if _LEFTOVER.fullmatch(leftover.name):
                _remove(leftover)
    _sync("aced:open_checkpoints")
    return Checkpoints(directory, keep)


def checkpoint_steps(run_dir: str | os.PathLike) -> list[int]:
    """Steps of the complete checkpoints under ``<run_dir>/checkpoints`` (oldest first)."""
    return _complete_steps(pathlib.Path(run_dir).absolute() / CHECKPOINTS)


def write_record(path: pathlib.Path, record: dict[str, Any]) -> None:
    """Write a checkpoint's JSON `record` to `path` and flush it to the disk.

    The one file of a checkpoint that aced writes itself (orbax writes the
    arrays); `save_checkpoint` calls it inside the partial step directory.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())


def _pause_if_asked(step: int, partial: pathlib.Path) -> None:
    asked = os.environ.get(PAUSE_ENV)
    if not asked:
        return
    at, _, signal_file = asked.partition(":")
    if not (at.isdigit() and signal_file):
        raise ValueError(f"{PAUSE_ENV}={asked!r} must be <step>:<file>")
    if int(at) == step:
        pathlib.Path(signal_file).write_text(str(partial))
        time.sleep(600)


def _write_arrays(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    checkpointer = ocp.Checkpointer(ocp.StandardCheckpointHandler())
    try:
        checkpointer.save(path, args=ocp.args.StandardSave(arrays))
    finally:
        checkpointer.close()


def _is_disk_full(error: BaseException | None) -> bool:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error):
            return True
        if isinstance(error, BaseExceptionGroup) and any(map(_is_disk_full, error.exceptions)):
            return True
        error = error.__cause__ or error.__context__
    return False


def save_checkpoint(checkpoints: Checkpoints, state: TrainState, meta: dict[str, Any]) -> int:
    """Write `state` and the JSON-serialisable `meta` as the checkpoint of ``state.step``.

    **Arguments:**

    - `checkpoints`: from `open_checkpoints`.
    - `state`: the training state after ``state.step`` steps.
    - `meta`: data iterator position, run config, FLOPs, metrics (anything JSON).

    **Returns:** the step saved (nothing is written when it exists already).
    Raises `CheckpointError` when the write fails (disk full, permissions),
    after removing the partial step; the previous checkpoints are untouched.
    Once the step is complete, the steps beyond the latest ``keep`` are removed.
    """
    step = int(state.step)
    directory = checkpoints.directory
    if (directory / str(step)).is_dir():
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
            name: {"shape": list(a.shape), "dtype": str(a.dtype), "crc32": _crc(a)}
            for name, a in arrays.items()
        },
    }
    partial, primary = directory / f"{step}.partial", jax.process_index() == 0
    try:
        if primary:
            _remove(partial)
            partial.mkdir(parents=True)
        _sync(f"aced:save:{step}:partial")
        _write_arrays(partial / STATE, arrays)
        _pause_if_asked(step, partial)
        if primary:
            # orbax's files too, so that a damaged file is found before tensorstore reads it.
            record["files"] = _file_list(partial / STATE)
            write_record(partial / RECORD, record)
            _fsync_dir(partial)
            os.rename(partial, directory / str(step))
            _fsync_dir(directory)
        _sync(f"aced:save:{step}:done")
    except Exception as error:
        if primary:
            _remove(partial)
        kept = [s for s in _complete_steps(directory) if s != step]
        previous = (
            f"the previous checkpoint (step {max(kept)}) is intact"
            if kept
            else "no earlier checkpoint exists"
        )
        cause, fix = (
            ("the disk is full", "Free disk space (or lower train.keep_checkpoints)")
            if _is_disk_full(error)
            else ("the write failed", f"Make {directory} writable")
        )
        raise CheckpointError(
            f"saving the checkpoint of step {step} to {directory} failed: {cause} ({_first_line(error)}); "
            f"{previous}. {fix} and rerun the same command to resume from the latest checkpoint"
        ) from error
    except BaseException:  # KeyboardInterrupt: leave no partial step behind either
        if primary:
            _remove(partial)
        raise
    if primary:
        _drop_old_steps(checkpoints, step)
    return step


def _drop_old_steps(checkpoints: Checkpoints, saved: int) -> None:
    for old in _complete_steps(checkpoints.directory)[: -checkpoints.keep]:
        doomed = checkpoints.directory / f"{old}.deleting"
        try:
            os.rename(checkpoints.directory / str(old), doomed)
        except OSError as error:
            raise CheckpointError(
                f"the checkpoint of step {saved} is saved, but removing the old step {old} from "
                f"{checkpoints.directory} failed ({error}); remove it by hand"
            ) from error
        _remove(doomed)


def _record_problem(record: Any, step: int) -> str | None:
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return "it is not an aced checkpoint record"
    if record.get("step") != step:
        return f"it names step {record.get('step')!r}, not {step}"
    arrays = record.get("arrays")
    if not isinstance(record.get("key_impl"), str) or not isinstance(arrays, dict):
        return "it lacks the key or the array list"
    if not all(
        isinstance(a, dict) and {"shape", "dtype", "crc32"} <= set(a) for a in arrays.values()
    ):
        return "its array list is incomplete"
    files = record.get("files", {})  # absent in checkpoints written before aced listed them
    if not isinstance(files, dict) or not all(
        isinstance(f, list) and len(f) == 2 and all(isinstance(n, int) for n in f)
        for f in files.values()
    ):
        return "its file list is damaged"
    return None


def _load_record(step_dir: pathlib.Path, step: int) -> dict[str, Any]:
    path = step_dir / RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"its record {path} is unreadable ({_first_line(error)})") from error
    problem = _record_problem(record, step)
    if problem:
        raise ValueError(f"its record {path} is damaged: {problem}")
    return record


def _looks_intact(step_dir: pathlib.Path, step: int) -> bool:
    try:
        _load_record(step_dir, step)
    except ValueError:
        return False
    return (step_dir / STATE).is_dir()


def _unreadable(
    path: pathlib.Path, step: int, reason: str, run_dir: pathlib.Path
) -> CheckpointError:
    older = [
        s
        for s in checkpoint_steps(run_dir)
        if s < step and _looks_intact(run_dir / CHECKPOINTS / str(s), s)
    ]
    fix = (
        f"delete {path} to resume from an older step ({', '.join(map(str, older))}), "
        "or start afresh with another train.out_dir"
        if older
        else f"no older intact checkpoint exists: delete {path} (or choose another "
        "train.out_dir) to start afresh"
    )
    return CheckpointError(
        f"checkpoint {path} cannot be restored: {reason}. It is truncated or corrupted: {fix}"
    )


def _resolve_step(run_dir: pathlib.Path, step: int | None) -> int:
    steps = checkpoint_steps(run_dir)
    if not steps:
        raise CheckpointError(
            f"no checkpoint in {run_dir / CHECKPOINTS}; train first (aced train ...)"
        )
    if step is None:
        return steps[-1]
    if step not in steps:
        raise CheckpointError(
            f"no checkpoint of step {step} in {run_dir / CHECKPOINTS}; available: {steps}"
        )
    return step


def read_meta(run_dir: str | os.PathLike, step: int | None = None) -> dict[str, Any]:
    """The JSON record of a checkpoint (latest by default), without its arrays."""
    run_dir = pathlib.Path(run_dir).absolute()
    step = _resolve_step(run_dir, step)
    path = run_dir / CHECKPOINTS / str(step)
    try:
        return _load_record(path, step)
    except ValueError as error:
        raise _unreadable(path, step, str(error), run_dir) from error


def _read_arrays(path: pathlib.Path, targets: dict[str, jax.ShapeDtypeStruct]) -> dict[str, Any]:
    checkpointer = ocp.Checkpointer(ocp.StandardCheckpointHandler())
    try:
        return checkpointer.restore(path, args=ocp.args.StandardRestore(targets))
    finally:
        checkpointer.close()


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
    (and an older intact step, if any) when the checkpoint is missing,
    truncated, corrupted or of another shape.
    """
    run_dir = pathlib.Path(run_dir).absolute()
    meta = read_meta(run_dir, step)
    step = int(meta["step"])
    path = run_dir / CHECKPOINTS / str(step)
    names, treedef, static = _split_state(template)

    def abstract(x: Any) -> jax.ShapeDtypeStruct:
        sharding = getattr(x, "sharding", None) or jax.sharding.SingleDeviceSharding(
            jax.devices()[0]
        )
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    targets = {name: abstract(x) for name, x in names.items()}
    stored = meta["arrays"]
    different = [
        f"{name}: {stored[name]['dtype']}{tuple(stored[name]['shape'])} saved, "
        f"{targets[name].dtype}{targets[name].shape} expected"
        for name in sorted(set(stored) & set(targets))
        if (stored[name]["dtype"], tuple(stored[name]["shape"]))
        != (str(targets[name].dtype), targets[name].shape)
    ]
    missing, extra = sorted(set(targets) - set(stored)), sorted(set(stored) - set(targets))
    if missing or extra or different:
        raise CheckpointError(
            f"checkpoint {path} holds another model or optimiser than the configuration "
            f"(missing {missing[:3]}, unexpected {extra[:3]}, different {different[:2]}); restore it "
            "with the run config it was saved with, or start afresh with another train.out_dir"
        )
    damaged = _damaged_file(path / STATE, meta.get("files", {}))
    if damaged:
        raise _unreadable(path, step, damaged, run_dir)
    try:
        restored = _read_arrays(path / STATE, targets)
        damaged = [name for name in targets if _crc(restored[name]) != stored[name]["crc32"]]
        if damaged:
            raise ValueError(f"array {damaged[0]} does not match its checksum")
        arrays = jax.tree_util.tree_unflatten(treedef, [restored[name] for name in names])
        key = jax.random.wrap_key_data(arrays.key, impl=meta["key_impl"])
    except Exception as error:  # orbax and tensorstore raise many types for a damaged file
        raise _unreadable(path, step, _first_line(error), run_dir) from error
    return eqx.combine(eqx.tree_at(lambda s: s.key, arrays, key), static), meta


def save_model(
    model: TwoTower, directory: str | os.PathLike, *, extra_files: tuple = ()
) -> pathlib.Path:
    """Write a `TwoTower` as ``config.json`` + ``model.safetensors`` (`aced.models.serialization`).

    **Arguments:**

    - `model`: the model; `directory`: replaced atomically if it exists.
    - `extra_files`: files copied in (e.g. ``tokenizer.json``).

    **Returns:** the directory. Raises `CheckpointError` when the write fails.
    """
    try:
        return save_two_tower(model, directory, overwrite=True, extra_files=extra_files)
    except Exception as error:  # OSError, or safetensors' own error on a full disk
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
