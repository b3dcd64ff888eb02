"""Reading a checkpoint: aced's record and file list first, then orbax's arrays, all checked.

Reads both formats (`layout.FORMAT`): the arrays packed by dtype (2) and the
arrays one by one (1, checkpoints written before aced packed them).
"""

import json
import os
import pathlib
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from aced.train.checkpoint.layout import (
    CHECKPOINTS,
    FORMATS,
    RECORD,
    STATE,
    CheckpointError,
    array_crc,
    checkpoint_steps,
    damaged_file,
    first_line,
    split_state,
    unpack,
)
from aced.train.state import TrainState


def _record_problem(record: Any, step: int) -> str | None:
    if not isinstance(record, dict) or record.get("format") not in FORMATS:
        return "it is not an aced checkpoint record"
    if record.get("step") != step:
        return f"it names step {record.get('step')!r}, not {step}"
    arrays = record.get("arrays")
    packed = record.get("packed", {} if record["format"] == 1 else None)
    if not isinstance(record.get("key_impl"), str) or not isinstance(arrays, dict):
        return "it lacks the key or the array list"
    fields = {"shape", "dtype", "crc32"} | ({"offset"} if record["format"] >= 2 else set())
    if not all(isinstance(a, dict) and fields <= set(a) for a in arrays.values()):
        return "its array list is incomplete"
    if not isinstance(packed, dict) or not all(isinstance(n, int) for n in packed.values()):
        return "its packed array list is damaged"
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
        raise ValueError(f"its record {path} is unreadable ({first_line(error)})") from error
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


def _read_arrays(path: pathlib.Path, targets: dict[str, Any]) -> dict[str, Any]:
    checkpointer = ocp.Checkpointer(ocp.StandardCheckpointHandler())
    try:
        return checkpointer.restore(path, args=ocp.args.StandardRestore(targets))
    finally:
        checkpointer.close()


def _read_state(
    path: pathlib.Path, meta: dict[str, Any], targets: dict[str, jax.ShapeDtypeStruct]
) -> dict[str, Any]:
    """The arrays of `targets` from `path` (a step's ``state/``), each checked against
    its CRC32, placed with its target's sharding."""
    stored = meta["arrays"]
    if meta["format"] == 1:
        arrays = _read_arrays(path, targets)
    else:  # the packed arrays on the host, then each leaf's slice onto its devices
        flat = {dtype: np.empty((n,), jnp.dtype(dtype)) for dtype, n in meta["packed"].items()}
        arrays = unpack(_read_arrays(path, flat), {name: stored[name] for name in targets})
    damaged = [name for name in targets if array_crc(arrays[name]) != stored[name]["crc32"]]
    if damaged:
        raise ValueError(f"array {damaged[0]} does not match its checksum")
    if meta["format"] == 1:
        return arrays
    return {
        name: jax.make_array_from_callback(
            target.shape, target.sharding, lambda index, host=arrays[name]: host[index]
        )
        for name, target in targets.items()
    }


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
    names, treedef, static = split_state(template)

    def abstract(x: Any) -> jax.ShapeDtypeStruct:
        sharding = getattr(x, "sharding", None) or jax.sharding.SingleDeviceSharding(
            jax.local_devices()[0]
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
    damaged = damaged_file(path / STATE, meta.get("files", {}))
    if damaged:
        raise _unreadable(path, step, damaged, run_dir)
    try:
        restored = _read_state(path / STATE, meta, targets)
        arrays = jax.tree_util.tree_unflatten(treedef, [restored[name] for name in names])
        key = jax.random.wrap_key_data(arrays.key, impl=meta["key_impl"])
    except Exception as error:  # orbax and tensorstore raise many types for a damaged file
        raise _unreadable(path, step, first_line(error), run_dir) from error
    return eqx.combine(eqx.tree_at(lambda s: s.key, arrays, key), static), meta
