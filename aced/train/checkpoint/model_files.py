"""Model files: one `TwoTower` as ``config.json`` + ``model.safetensors``, for inference,
export or use as a reference (`aced.models.serialization`)."""

import os
import pathlib

from aced.models import TwoTower
from aced.models.serialization import ARRAYS_FILE, CONFIG_FILE, load_two_tower, save_two_tower
from aced.train.checkpoint.layout import CheckpointError


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
