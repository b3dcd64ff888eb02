"""Fashion-MNIST read from its idx files, the source of the built-in scenes.

Fashion-MNIST (Xiao et al. 2017) holds 28x28 grey photographs of ten kinds of
clothing: 60,000 for training and 10,000 for testing. The files are looked up
in this order: the ``data_dir`` argument, the ``ACED_DATA_DIR`` environment
variable, then ``/usr/share/datasets/fashion-mnist`` (Debian's
``dataset-fashion-mnist`` package). Either the ``.gz`` files or their
uncompressed twins are accepted. `load_fashion_mnist_hub` reads the Hugging
Face hub copy instead, for machines that are online; nothing requires it.
"""

import functools
import gzip
import os
import pathlib
from typing import Literal

import numpy as np
from beartype import beartype as typechecker
from jaxtyping import UInt8, jaxtyped

DEFAULT_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "ACED_DATA_DIR"
HUB_NAME = "zalando-datasets/fashion_mnist"

# Official label order of the dataset (label i is CLASS_NAMES[i]).
CLASS_NAMES = (
    "t-shirt",
    "trousers",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 28

_PREFIX = {"train": "train", "test": "t10k"}
_MAGIC_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions
_MAGIC_LABELS = 0x00000801  # unsigned bytes, 1 dimension
_INSTALL_HINT = (
    "install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist) "
    f"or set {ENV_VAR} to a directory holding train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz"
)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The directory the idx files are read from (argument, env var, Debian path).

    **Arguments:**

    - `data_dir`: an explicit directory; when None, ``$ACED_DATA_DIR`` and then
      the Debian package's directory are used.

    **Returns:** the directory, which is not yet checked for the files.
    """
    if data_dir is not None:
        return pathlib.Path(data_dir)
    from_env = os.environ.get(ENV_VAR)
    return pathlib.Path(from_env) if from_env else DEFAULT_DIR


def _find(directory: pathlib.Path, stem: str) -> pathlib.Path:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {directory / (stem + '.gz')} not found "
        f"(searched {directory}, chosen from the data_dir argument, ${ENV_VAR} "
        f"or {DEFAULT_DIR}); {_INSTALL_HINT}"
    )


def _read_idx(path: pathlib.Path, magic: int, ndim: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read Fashion-MNIST file {path}: {err}; {_INSTALL_HINT}") from err
    header = 4 * (1 + ndim)
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise ValueError(
            f"{path} is not an idx file of unsigned bytes with {ndim} dimension(s) "
            f"(magic number {magic:#010x} expected); {_INSTALL_HINT}"
        )
    shape = tuple(int.from_bytes(raw[4 * (i + 1) : 4 * (i + 2)], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise ValueError(
            f"{path} holds {len(raw) - header} bytes of data but its header says {shape}; "
            f"the file is truncated or corrupt; {_INSTALL_HINT}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


@functools.lru_cache(maxsize=4)
def _load_cached(
    image_file: pathlib.Path, label_file: pathlib.Path, split: str, stamp: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    # `stamp` (the files' modification times) is part of the cache key, so a
    # rewritten file is read again.
    directory = image_file.parent
    images = _read_idx(image_file, _MAGIC_IMAGES, 3)
    labels = _read_idx(label_file, _MAGIC_LABELS, 1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Fashion-MNIST {split} split in {directory} has {images.shape[0]} images "
            f"but {labels.shape[0]} labels; {_INSTALL_HINT}"
        )
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise ValueError(f"Fashion-MNIST {split} labels in {directory} exceed {NUM_CLASSES - 1}")
    return images, labels


@jaxtyped(typechecker=typechecker)
def load_fashion_mnist(
    split: Literal["train", "test"], data_dir: str | os.PathLike | None = None
) -> tuple[UInt8[np.ndarray, "m 28 28"], UInt8[np.ndarray, " m"]]:
    """Fashion-MNIST images and labels of one split, as read-only uint8 arrays.

    The decompressed arrays are kept in memory (not on disk) so that building
    several splits reads each file once (again if the file changes).

    **Arguments:**

    - `split`: ``"train"`` (60,000 examples) or ``"test"`` (10,000).
    - `data_dir`: directory of the idx files; see `resolve_data_dir`.

    **Returns:** ``(images, labels)``: uint8 arrays of shapes (m, 28, 28) and
    (m,), labels indexing `CLASS_NAMES`.

    Raises `FileNotFoundError` naming the path and the fix when a file is
    missing, `ValueError` when one is unreadable.
    """
    if split not in _PREFIX:
        raise ValueError(f"split={split!r} must be 'train' or 'test'")
    directory = resolve_data_dir(data_dir).resolve()
    if not directory.is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST directory {directory} does not exist; {_INSTALL_HINT}"
        )
    prefix = _PREFIX[split]
    image_file = _find(directory, f"{prefix}-images-idx3-ubyte")
    label_file = _find(directory, f"{prefix}-labels-idx1-ubyte")
    stamp = (image_file.stat().st_mtime_ns, label_file.stat().st_mtime_ns)
    return _load_cached(image_file, label_file, split, stamp)


@jaxtyped(typechecker=typechecker)
def load_fashion_mnist_hub(
    split: Literal["train", "test"], cache_dir: str | None = None
) -> tuple[UInt8[np.ndarray, "m 28 28"], UInt8[np.ndarray, " m"]]:
    """Fashion-MNIST from the Hugging Face hub copy (needs a network connection).

    **Arguments:**

    - `split`: ``"train"`` or ``"test"``.
    - `cache_dir`: the `datasets` cache directory (its default when None).

    **Returns:** ``(images, labels)`` as in `load_fashion_mnist`.
    """
    import datasets

    dataset = datasets.load_dataset(HUB_NAME, split=split, cache_dir=cache_dir)
    if not {"image", "label"} <= set(dataset.column_names):
        raise ValueError(
            f"{HUB_NAME} split {split} lacks an 'image' or 'label' column "
            f"(has {dataset.column_names})"
        )
    images = np.stack([np.asarray(im.convert("L"), dtype=np.uint8) for im in dataset["image"]])
    labels = np.asarray(dataset["label"], dtype=np.uint8)
    return images, labels
