"""A small stand-in for the Fashion-MNIST idx files, written at test time.

Every image encodes where it came from, so tests can read a rendered scene
back: pixel (0, 0) is 10 + class, (0, 1) and (0, 2) the image's index (high
and low byte), (0, 3) its split (1 train, 2 test). The other pixels are a
random texture in [100, 255], so no item is mistaken for an empty cell.
"""

import gzip
import pathlib

import numpy as np

SPLIT_CODE = {"train": 1, "t10k": 2}


def fake_images(n: int, split_code: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(100, 256, size=(n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = 10 + labels
    images[:, 0, 1] = np.arange(n) // 256
    images[:, 0, 2] = np.arange(n) % 256
    images[:, 0, 3] = split_code
    return images, labels


def write_idx(path: pathlib.Path, array: np.ndarray, compress: bool = True) -> None:
    magic = (0x0800 + array.ndim).to_bytes(4, "big")
    header = magic + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_fake_fashion_mnist(
    directory: pathlib.Path, n_train: int = 600, n_test: int = 600, compress: bool = True
) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = fake_images(n, SPLIT_CODE[prefix], seed=SPLIT_CODE[prefix])
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return directory


def read_cells(
    image: np.ndarray, rows: int, cols: int, cell: int = 28
) -> list[tuple[int, int, int] | None]:
    """(class, index, split code) of each cell of a rendered scene, None if empty."""
    out = []
    for r in range(rows):
        for c in range(cols):
            patch = image[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell]
            if not patch.any():
                out.append(None)
            else:
                out.append(
                    (
                        int(patch[0, 0]) - 10,
                        256 * int(patch[0, 1]) + int(patch[0, 2]),
                        int(patch[0, 3]),
                    )
                )
    return out
