"""Checkpoints without pickle: ``config.json`` + ``model.safetensors``.

Any pytree of arrays (an `eqx.Module`, a train state, optimizer state) is
flattened to path-named arrays (``image.blocks.mlp.fc1.weight``) and written
with safetensors; reading fills the arrays back into a skeleton of the same
structure (e.g. from ``eqx.filter_eval_shape``), checking names, shapes and
dtypes. Nothing is ever unpickled. Directories are written atomically: into a
temporary sibling first, then renamed, so a crash leaves no half-written
checkpoint.
"""

import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file, save_file

from aced.models.two_tower import TwoTower, TwoTowerConfig

CONFIG_FILE = "config.json"
ARRAYS_FILE = "model.safetensors"


def _path_name(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator=".")


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def tree_to_arrays(tree: Any) -> dict[str, np.ndarray]:
    """Flatten the array leaves of `tree` to a ``{path name: numpy array}`` dict.

    Typed PRNG keys are stored as their raw key data. Non-array leaves (static
    fields, Python scalars) are not stored: they belong to the config.
    """
    params, _ = eqx.partition(tree, eqx.is_array)
    arrays = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if _is_key(leaf):
            leaf = jax.random.key_data(leaf)
        arrays[_path_name(path)] = np.asarray(leaf)
    return arrays


def model_checksum(model: TwoTower) -> str:
    """SHA-256 of a `TwoTower`'s config and parameters: same model, same digest.

    Independent of the files it came from (an aced model directory, a run's
    checkpoint, a converted checkpoint): the config as sorted JSON, then each
    parameter's path name, dtype, shape and bytes, in path-name order.
    """
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, array in sorted(tree_to_arrays(model).items()):
        array = np.ascontiguousarray(array)
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def arrays_to_tree(skeleton: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """Fill the array leaves of `skeleton` from a `tree_to_arrays`-style dict.

    **Arguments:**

    - `skeleton`: a pytree of the wanted structure whose array leaves are
      arrays or ``jax.ShapeDtypeStruct`` (``eqx.filter_eval_shape`` of a
      constructor gives one without allocating weights).
    - `arrays`: path-named arrays; every name must match a leaf of `skeleton`
      with the same shape, and none may be left over.

    **Returns:** `skeleton` with its array leaves replaced by JAX arrays (cast
    to the skeleton's dtype).
    """
    is_leaf_array = lambda x: eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)  # noqa: E731
    params, static = eqx.partition(skeleton, is_leaf_array)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [_path_name(path) for path, _ in leaves]
    missing = [name for name in names if name not in arrays]
    unexpected = sorted(set(arrays) - set(names))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not match the model: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}; was it written for another config?"
        )
    filled = []
    for name, (_, leaf) in zip(names, leaves):
        value = arrays[name]
        if _is_key(leaf):
            # A ShapeDtypeStruct key carries its PRNG implementation only in its dtype.
            if eqx.is_array(leaf):
                impl = jax.random.key_impl(leaf)
            else:
                impl = getattr(leaf.dtype, "_impl", None)
            value = jax.random.wrap_key_data(jnp.asarray(value), impl=impl)
        if tuple(value.shape) != tuple(leaf.shape):
            raise ValueError(
                f"array {name!r} has shape {tuple(value.shape)} but the model expects "
                f"{tuple(leaf.shape)}; was the checkpoint written for another config?"
            )
        filled.append(value if _is_key(leaf) else jnp.asarray(value, dtype=leaf.dtype))
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, filled), static)


def write_checkpoint(
    directory: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    config: Mapping[str, Any],
    *,
    overwrite: bool = False,
    extra_files: Sequence[str | os.PathLike] = (),
) -> pathlib.Path:
    """Atomically write ``config.json`` and ``model.safetensors`` into `directory`.

    **Arguments:**

    - `directory`: the checkpoint directory to create.
    - `arrays`: path-named numpy arrays (`tree_to_arrays`).
    - `config`: JSON-serialisable config.
    - `overwrite`: replace an existing `directory` (otherwise an error).
    - `extra_files`: files copied in under their own names (e.g. tokenizer
      files), inside the same atomic write.

    **Returns:** the directory path.
    """
    out = pathlib.Path(directory)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True or choose another path")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        with open(tmp / CONFIG_FILE, "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
        save_file(
            {name: np.asarray(a, order="C") for name, a in arrays.items()},
            str(tmp / ARRAYS_FILE),
            metadata={"format": "aced"},
        )
        for extra in map(pathlib.Path, extra_files):
            if extra.name in (CONFIG_FILE, ARRAYS_FILE):
                raise ValueError(
                    f"extra file {extra} would overwrite the checkpoint's own {extra.name}"
                )
            shutil.copyfile(extra, tmp / extra.name)
        if out.exists():
            old = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a `write_checkpoint` directory: ``(config dict, path-named arrays)``."""
    path = pathlib.Path(directory)
    for name in (CONFIG_FILE, ARRAYS_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(
                f"{path / name} not found; an aced checkpoint directory holds "
                f"{CONFIG_FILE} and {ARRAYS_FILE}"
            )
    with open(path / CONFIG_FILE) as f:
        config = json.load(f)
    return config, load_file(str(path / ARRAYS_FILE))


def save_two_tower(
    model: TwoTower,
    directory: str | os.PathLike,
    *,
    overwrite: bool = False,
    extra_files: Sequence[str | os.PathLike] = (),
) -> pathlib.Path:
    """Write a `TwoTower` as ``config.json`` (its `TwoTowerConfig`) + ``model.safetensors``.

    **Arguments:**

    - `model`: the model.
    - `directory`: the checkpoint directory, written atomically.
    - `overwrite`: replace an existing `directory` (otherwise an error).
    - `extra_files`: files to carry along (e.g. the tokenizer's).

    **Returns:** the directory path.
    """
    return write_checkpoint(
        directory,
        tree_to_arrays(model),
        model.config.to_dict(),
        overwrite=overwrite,
        extra_files=extra_files,
    )


def load_two_tower(directory: str | os.PathLike) -> TwoTower:
    """Load a `TwoTower` written by `save_two_tower` (or ``aced convert``); no pickle."""
    config_dict, arrays = read_checkpoint(directory)
    config = TwoTowerConfig.from_dict(config_dict)
    skeleton = eqx.filter_eval_shape(TwoTower, config, key=jax.random.key(0))
    return arrays_to_tree(skeleton, arrays)
