"""Writing a checkpoint: orbax's arrays and aced's record into ``<step>.partial/``, then a rename.

The state's arrays go to orbax packed by dtype (`layout.pack`: a few flat arrays,
not one per leaf); the record keeps each array's shape, dtype, offset and CRC32.
"""

import errno
import json
import os
import pathlib
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from aced.train.checkpoint.layout import (
    FORMAT,
    PAUSE_ENV,
    RECORD,
    STATE,
    CheckpointError,
    Checkpoints,
    array_crc,
    complete_steps,
    discard,
    file_list,
    first_line,
    fsync_dir,
    pack,
    remove,
    split_state,
    sync,
)
from aced.train.state import TrainState


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
        # Written whole, then renamed: a test that sees the file can read the path at once.
        ready = pathlib.Path(f"{signal_file}.tmp")
        ready.write_text(str(partial))
        os.replace(ready, signal_file)
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
    arrays, _, _ = split_state(state)
    # Host copies: the state is replicated, and orbax's replica-parallel writer
    # would compile a slicing program per array and replica.
    arrays = {name: np.asarray(a) for name, a in arrays.items()}
    packed, offsets = pack(arrays)
    record = {
        **meta,
        "format": FORMAT,
        "step": step,
        "key_impl": str(jax.random.key_impl(state.key)),
        "arrays": {
            name: {
                "shape": list(a.shape),
                "dtype": str(a.dtype),
                "crc32": array_crc(a),
                "offset": offsets[name],
            }
            for name, a in arrays.items()
        },
        "packed": {dtype: int(flat.size) for dtype, flat in packed.items()},
    }
    partial, primary = directory / f"{step}.partial", jax.process_index() == 0
    try:
        if primary:
            remove(partial)
            partial.mkdir(parents=True)
        sync(f"aced:save:{step}:partial")
        _write_arrays(partial / STATE, packed)
        _pause_if_asked(step, partial)
        if primary:
            # orbax's files too, so that a damaged file is found before tensorstore reads it.
            record["files"] = file_list(partial / STATE)
            write_record(partial / RECORD, record)
            fsync_dir(partial)
            os.rename(partial, directory / str(step))
            fsync_dir(directory)
        sync(f"aced:save:{step}:done")
    except Exception as error:
        if primary:
            discard(partial)
        kept = [s for s in complete_steps(directory) if s != step]
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
            f"saving the checkpoint of step {step} to {directory} failed: {cause} ({first_line(error)}); "
            f"{previous}. {fix} and rerun the same command to resume from the latest checkpoint"
        ) from error
    except BaseException:  # KeyboardInterrupt: leave no partial step behind either
        if primary:
            discard(partial)
        raise
    if primary:
        _drop_old_steps(checkpoints, step)
    return step


def _drop_old_steps(checkpoints: Checkpoints, saved: int) -> None:
    for old in complete_steps(checkpoints.directory)[: -checkpoints.keep]:
        doomed = checkpoints.directory / f"{old}.deleting"
        try:
            os.rename(checkpoints.directory / str(old), doomed)
        except OSError as error:
            raise CheckpointError(
                f"the checkpoint of step {saved} is saved, but removing the old step {old} from "
                f"{checkpoints.directory} failed ({error}); remove it by hand"
            ) from error
        remove(doomed)
