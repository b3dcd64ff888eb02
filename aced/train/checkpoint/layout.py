"""The step directory of a checkpoint: its names, the error type, listing and clean-up.

See `aced.train.checkpoint` for the layout; `save` and `restore` build on these.
"""

import dataclasses
import math
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
from jax.experimental import multihost_utils

from aced.train.state import TrainState

CHECKPOINTS = "checkpoints"
STATE = "state"
RECORD = pathlib.Path("meta", "metadata")  # where orbax's JSON item put it before aced wrote it
# 2: the arrays of each dtype packed into one flat array (orbax's cost is mostly per
# array; benchmarks/README.md, "Loop overhead", has a save's time before and after);
# 1: one orbax array per state leaf. `restore_checkpoint` reads both.
FORMAT = 2
FORMATS = (1, 2)
# In-progress saves and clean-ups (and the temporary directories of orbax's own manager,
# which wrote aced's checkpoints before): never a step, removed by `open_checkpoints`.
LEFTOVER = re.compile(r"\d+\.(partial|deleting|orbax-checkpoint-tmp.*)")
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
        return complete_steps(self.directory)

    def close(self) -> None:
        pass

    def __enter__(self) -> "Checkpoints":  # noqa: PYI034 (beartype refuses Self here)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _is_leaf_array(x: Any) -> bool:
    return eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def split_state(state: TrainState) -> tuple[dict[str, Any], Any, Any]:
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


def pack(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """``({dtype: flat array}, {name: offset})``: each dtype's arrays, flattened and
    concatenated in the order of `arrays`; a name's elements start at its offset in
    the flat array of its dtype."""
    groups: dict[str, list[np.ndarray]] = {}
    offsets, sizes = {}, {}
    for name, array in arrays.items():
        dtype = str(array.dtype)
        offsets[name] = sizes.get(dtype, 0)
        sizes[dtype] = offsets[name] + array.size
        groups.setdefault(dtype, []).append(np.ravel(array))
    return {dtype: np.concatenate(flat) for dtype, flat in groups.items()}, offsets


def unpack(
    packed: dict[str, np.ndarray], layout: dict[str, dict[str, Any]]
) -> dict[str, np.ndarray]:
    """The arrays `pack` flattened: ``layout[name]`` holds their shape, dtype and offset."""
    out = {}
    for name, entry in layout.items():
        shape, start = tuple(entry["shape"]), entry["offset"]
        flat = packed[entry["dtype"]][start : start + math.prod(shape)]
        if flat.size != math.prod(shape):
            raise ValueError(f"array {name} lies beyond its packed {entry['dtype']} array")
        out[name] = flat.reshape(shape)
    return out


def array_crc(array: Any) -> int:
    return zlib.crc32(np.ascontiguousarray(np.asarray(array)).tobytes())


def complete_steps(directory: pathlib.Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def discard(partial: pathlib.Path, settle: float = 0.3, timeout: float = 30.0) -> None:
    """Remove a failed step's directory for good.

    When a write fails, orbax raises as soon as one of its writer threads fails;
    the others may still be finishing, and tensorstore re-creates the
    directories it writes into. So remove, then check that the directory stays
    gone for `settle` seconds, until `timeout` (what is left then, the next
    `open_checkpoints` removes).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        remove(partial)
        gone_since = time.monotonic()
        while not partial.exists() and time.monotonic() - gone_since < settle:
            time.sleep(0.05)
        if not partial.exists():
            return


def sync(name: str) -> None:
    # Only the first process writes aced's own files; the others wait for it.
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def fsync_dir(path: pathlib.Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else ""
    text = text if len(text) <= 240 else text[:240] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _filearray_crc(path: pathlib.Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def file_list(root: pathlib.Path) -> dict[str, list[int]]:
    """``{path relative to root: [bytes, crc32]}`` of every file under `root`."""
    return {
        path.relative_to(root).as_posix(): [path.stat().st_size, _filearray_crc(path)]
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def damaged_file(root: pathlib.Path, files: dict[str, Any]) -> str | None:
    """What is wrong with the first file of `files` (from `file_list`) that differs on disk."""
    for name, (size, crc) in files.items():
        path = root / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != size:
            return f"{path} holds {path.stat().st_size} bytes, not the {size} written"
        if _filearray_crc(path) != crc:
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
            if LEFTOVER.fullmatch(leftover.name):
                remove(leftover)
    sync("aced:open_checkpoints")
    return Checkpoints(directory, keep)


def checkpoint_steps(run_dir: str | os.PathLike) -> list[int]:
    """Steps of the complete checkpoints under ``<run_dir>/checkpoints`` (oldest first)."""
    return complete_steps(pathlib.Path(run_dir).absolute() / CHECKPOINTS)
