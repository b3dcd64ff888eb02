"""Image-caption datasets on disk, read through Hugging Face `datasets`.

Four formats that CLIP-style models are trained from, all read offline:

- `load_parquet`: parquet files with an image column (HF ``Image`` structs
  or raw encoded bytes) and a caption column, names configurable.
- `load_imagefolder`: a folder of images with a ``metadata.jsonl`` /
  ``metadata.csv`` holding ``file_name`` and a caption column.
- `load_webdataset`: webdataset ``.tar`` shards of ``KEY.jpg|png|...`` +
  ``KEY.txt`` pairs.
- `load_csv`: open_clip's CSV of image paths and captions (columns
  ``filepath`` and ``title``, tab-separated by default); relative paths are
  resolved against `image_root` (by default the CSV's own folder).

Each returns an `ImageTextDataset`, which decodes images lazily (so that a
corrupt image is found, and skipped or reported, when its batch is built)
and feeds `aced.data.batching.BatchIterator`. `datasets` keeps its usual
Arrow cache (``cache_dir``, default ``~/.cache/huggingface/datasets``).
"""

import dataclasses
import glob
import os
import pathlib
from collections.abc import Sequence

import datasets
import numpy as np
import PIL.Image

from aced.data.batching import LoadedExamples
from aced.data.images import BadImageError, decode_image, resize_center_crop

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")
PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]


@dataclasses.dataclass(frozen=True)
class ImageTextDataset:
    """A `datasets.Dataset` of images and captions, decoded on demand.

    **Fields:**

    - `dataset`: the table; its image column is either ``Image(decode=False)``
      structs ``{"bytes", "path"}`` or path strings.
    - `image_column`, `caption_column`: column names.
    - `image_root`: folder that relative path strings are resolved against.
    """

    dataset: datasets.Dataset
    image_column: str
    caption_column: str
    image_root: str | None = None

    def __len__(self) -> int:
        return self.dataset.num_rows

    def _decode(self, value: object) -> PIL.Image.Image:
        if isinstance(value, dict):
            path = value.get("path")
            if value.get("bytes") is None and path and self.image_root and not os.path.isabs(path):
                path = os.path.join(self.image_root, path)
            return decode_image(value.get("bytes"), path)
        if isinstance(value, (str, os.PathLike)):
            path = os.fspath(value)
            if self.image_root and not os.path.isabs(path):
                path = os.path.join(self.image_root, path)
            return decode_image(None, path)
        if isinstance(value, bytes):
            return decode_image(value)
        raise BadImageError(f"unsupported image value of type {type(value).__name__}")

    def load(self, indices: np.ndarray, image_size: int | None, channels: int) -> LoadedExamples:
        """Decode, resize (shorter side) and center-crop the examples at `indices`.

        **Arguments:**

        - `indices`: int (k,) row numbers; `image_size`: output side (required
          here); `channels`: 1 or 3.

        **Returns:** `LoadedExamples`, bad images flagged rather than raised.
        """
        if image_size is None:
            raise ValueError(
                "image_size is required for datasets of photographs; pass the model's resolution"
            )
        rows = self.dataset[[int(i) for i in indices]]
        images = np.zeros((len(indices), image_size, image_size, channels), dtype=np.uint8)
        ok = np.ones(len(indices), dtype=bool)
        errors = [""] * len(indices)
        for k, value in enumerate(rows[self.image_column]):
            try:
                images[k] = resize_center_crop(self._decode(value), image_size, channels)
            except BadImageError as err:
                ok[k], errors[k] = False, str(err)
        captions = ["" if c is None else str(c) for c in rows[self.caption_column]]
        return LoadedExamples(images, captions, ok, errors, {})


def _files(paths: PathOrPaths, what: str) -> list[str]:
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found: list[str] = []
    for item in items:
        item = os.fspath(item)
        matches = (
            sorted(glob.glob(item))
            if glob.has_magic(item)
            else ([item] if os.path.isfile(item) else [])
        )
        if not matches:
            raise FileNotFoundError(
                f"{what} {item} not found; check the path (globs such as 'shards/*.tar' work)"
            )
        found += matches
    if not found:
        raise FileNotFoundError(f"no {what} given")
    return found


def _load(builder: str, origin: str, cache_dir: str | None, **kwargs) -> datasets.Dataset:
    try:
        return datasets.load_dataset(
            builder, split=kwargs.pop("split", "train"), cache_dir=cache_dir, **kwargs
        )
    except ValueError as err:
        # datasets' words for a table without rows.
        if "corresponds to no data" in str(err):
            raise ValueError(f"{origin} holds no examples") from err
        raise


def _checked(
    dataset: datasets.Dataset,
    image_column: str,
    caption_column: str,
    origin: str,
    image_root: str | None = None,
) -> ImageTextDataset:
    missing = [c for c in (image_column, caption_column) if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{origin} lacks column(s) {missing}; available columns: {dataset.column_names}. "
            "Name the right ones: image_column= / caption_column= in Python, "
            "data.image_column= / data.caption_column= on the aced command line"
        )
    if dataset.num_rows == 0:
        raise ValueError(f"{origin} holds no examples")
    feature = dataset.features[image_column]
    if isinstance(feature, datasets.Image) or getattr(feature, "dtype", None) == "binary":
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    return ImageTextDataset(dataset, image_column, caption_column, image_root)


def load_parquet(
    files: PathOrPaths,
    *,
    image_column: str = "image",
    caption_column: str = "caption",
    cache_dir: str | None = None,
) -> ImageTextDataset:
    """Parquet files (paths or globs) with an image and a caption column.

    **Arguments:**

    - `files`: one path/glob or several; `image_column`, `caption_column`:
      column names; `cache_dir`: `datasets` cache folder.

    **Returns:** an `ImageTextDataset`.
    """
    found = _files(files, "parquet file")
    dataset = _load("parquet", f"parquet data {found}", cache_dir, data_files={"train": found})
    return _checked(dataset, image_column, caption_column, f"parquet data {found}")


def load_imagefolder(
    directory: str | os.PathLike,
    *,
    caption_column: str = "caption",
    split: str = "train",
    cache_dir: str | None = None,
) -> ImageTextDataset:
    """A folder of images described by ``metadata.jsonl`` or ``metadata.csv``.

    **Arguments:**

    - `directory`: the folder; its metadata file maps ``file_name`` to the
      caption column. `caption_column`: that column's name. `split`: the
      split to read (a folder without split subfolders is ``"train"``).
      `cache_dir`: `datasets` cache folder.

    **Returns:** an `ImageTextDataset` (image column ``image``).
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"image folder {directory} not found")
    if not any(directory.rglob("metadata.*")):
        raise FileNotFoundError(
            f"image folder {directory} has no metadata.jsonl or metadata.csv; add one with a "
            f"'file_name' column and a '{caption_column}' column"
        )
    dataset = _load(
        "imagefolder", f"image folder {directory}", cache_dir, data_dir=str(directory), split=split
    )
    return _checked(dataset, "image", caption_column, f"image folder {directory}")


def load_webdataset(
    shards: PathOrPaths,
    *,
    image_key: str | None = None,
    caption_key: str = "txt",
    cache_dir: str | None = None,
) -> ImageTextDataset:
    """Webdataset tar shards of image + caption files sharing a key.

    **Arguments:**

    - `shards`: one path/glob or several ``.tar`` files.
    - `image_key`: the image file extension; by default the first of
      `IMAGE_EXTENSIONS` present. `caption_key`: the caption extension.
    - `cache_dir`: `datasets` cache folder.

    **Returns:** an `ImageTextDataset`.
    """
    found = _files(shards, "webdataset shard")
    dataset = _load(
        "webdataset", f"webdataset shards {found}", cache_dir, data_files={"train": found}
    )
    if image_key is None:
        present = [k for k in IMAGE_EXTENSIONS if k in dataset.column_names]
        if not present:
            raise ValueError(
                f"webdataset shards {found} hold no image files with extensions "
                f"{IMAGE_EXTENSIONS}; "
                f"keys present: {dataset.column_names}. Pass image_key="
            )
        image_key = present[0]
    return _checked(dataset, image_key, caption_key, f"webdataset shards {found}")


def load_csv(
    path: str | os.PathLike,
    *,
    image_column: str = "filepath",
    caption_column: str = "title",
    sep: str = "\t",
    image_root: str | os.PathLike | None = None,
    cache_dir: str | None = None,
) -> ImageTextDataset:
    """open_clip's CSV format: one image path and one caption per row.

    **Arguments:**

    - `path`: the CSV file; `image_column`, `caption_column`: column names
      (open_clip's ``--csv-img-key`` / ``--csv-caption-key``); `sep`: field
      separator (open_clip's ``--csv-separator``, tab by default).
    - `image_root`: folder relative image paths are resolved against; the
      CSV's folder by default.
    - `cache_dir`: `datasets` cache folder.

    **Returns:** an `ImageTextDataset` whose image column holds paths.
    """
    (found,) = _files(path, "CSV file")
    dataset = _load("csv", f"CSV file {found}", cache_dir, data_files={"train": [found]}, sep=sep)
    root = (
        os.fspath(image_root) if image_root is not None else os.path.dirname(os.path.abspath(found))
    )
    return _checked(dataset, image_column, caption_column, f"CSV file {found}", image_root=root)
