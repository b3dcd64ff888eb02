"""Loaders for parquet, imagefolder, webdataset and open_clip CSV, built in a
temporary folder at test time, read offline through Hugging Face datasets."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")

from aced.data import (  # noqa: E402
    BadImageError,
    BatchIterator,
    builtin_tokenizer,
    resize_center_crop,
)
from aced.data.hf import load_csv, load_imagefolder, load_parquet, load_webdataset  # noqa: E402

TOKENIZER = builtin_tokenizer()
CAPTIONS = [
    "a bag",
    "two shirts",
    "a coat in the top left",
    "a photo of a dress",
    "three items",
    "a sneaker",
]


def _picture(k: int) -> Image.Image:
    # Landscape, portrait or square; the central square is white, the rest dark.
    w, h = [(60, 30), (30, 60), (40, 40)][k % 3]
    array = np.full((h, w, 3), 10 * k, dtype=np.uint8)
    side = min(w, h)
    top, left = (h - side) // 2, (w - side) // 2
    array[top : top + side, left : left + side] = 255
    return Image.fromarray(array)


def _png(k: int) -> bytes:
    out = io.BytesIO()
    _picture(k).save(out, format="PNG")
    return out.getvalue()


def _loaded_rows(dataset, size=16):
    it = BatchIterator(
        dataset,
        TOKENIZER,
        batch_size=len(dataset),
        image_size=size,
        process_index=0,
        process_count=1,
    )
    return next(it), it


def _check(batch, size=16):
    assert (
        batch["images"].shape == (len(CAPTIONS), size, size, 3)
        and batch["images"].dtype == np.float32
    )
    # Shorter side resized, center crop: only the white square is left.
    assert (batch["images"][:, 2:-2, 2:-2] > 0.99).all()
    expected = TOKENIZER([CAPTIONS[i] for i in batch["index"]])
    np.testing.assert_array_equal(batch["tokens"], expected)


def test_resize_center_crop_reference():
    for k in range(3):
        out = resize_center_crop(_picture(k), 16, 3)
        assert out.shape == (16, 16, 3) and (out[1:-1, 1:-1] >= 250).all()
    grey = resize_center_crop(_picture(0), 8, 1)
    assert grey.shape == (8, 8, 1)


def test_parquet_with_hf_image_struct(tmp_path):
    table = datasets.Dataset.from_dict(
        {"image": [_picture(k) for k in range(6)], "caption": CAPTIONS}
    )
    table.cast_column("image", datasets.Image()).to_parquet(str(tmp_path / "part-0.parquet"))
    data = load_parquet(tmp_path / "*.parquet", cache_dir=str(tmp_path / "cache"))
    assert len(data) == 6
    _check(_loaded_rows(data)[0])


def test_parquet_with_raw_bytes_and_custom_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"jpg": [_png(k) for k in range(6)], "text": CAPTIONS}), tmp_path / "raw.parquet"
    )
    with pytest.raises(ValueError) as info:
        load_parquet(tmp_path / "raw.parquet", cache_dir=str(tmp_path / "cache"))
    message = str(info.value)
    assert "['image', 'caption']" in message and "['jpg', 'text']" in message
    data = load_parquet(
        tmp_path / "raw.parquet",
        image_column="jpg",
        caption_column="text",
        cache_dir=str(tmp_path / "cache"),
    )
    _check(_loaded_rows(data)[0])


def test_corrupt_image_bytes_skip_or_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [_png(k) for k in range(6)]
    images[2] = b"\x89PNG but not really"
    pq.write_table(pa.table({"image": images, "caption": CAPTIONS}), tmp_path / "bad.parquet")
    data = load_parquet(tmp_path / "bad.parquet", cache_dir=str(tmp_path / "cache"))
    it = BatchIterator(
        data, TOKENIZER, batch_size=5, image_size=16, process_index=0, process_count=1
    )
    batch = next(it)
    assert 2 not in batch["index"].tolist() and it.skipped == 1 and batch["images"].shape[0] == 5
    strict = BatchIterator(
        data,
        TOKENIZER,
        batch_size=6,
        image_size=16,
        process_index=0,
        process_count=1,
        on_bad_image="error",
    )
    with pytest.raises(BadImageError, match="example 2: cannot decode image"):
        next(strict)


def test_imagefolder_with_jsonl_and_csv_metadata(tmp_path):
    for kind in ("jsonl", "csv"):
        folder = tmp_path / kind
        folder.mkdir()
        for k in range(6):
            _picture(k).save(folder / f"{k}.png")
        if kind == "jsonl":
            lines = [
                json.dumps({"file_name": f"{k}.png", "caption": c}) for k, c in enumerate(CAPTIONS)
            ]
            (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
        else:
            rows = ["file_name,text"] + [f"{k}.png,{c}" for k, c in enumerate(CAPTIONS)]
            (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
        column = "caption" if kind == "jsonl" else "text"
        data = load_imagefolder(folder, caption_column=column, cache_dir=str(tmp_path / "cache"))
        batch, _ = _loaded_rows(data)
        # imagefolder may order files its own way: compare through the captions it read.
        order = [data.dataset[int(i)][column] for i in batch["index"]]
        np.testing.assert_array_equal(batch["tokens"], TOKENIZER(order))
        assert sorted(order) == sorted(CAPTIONS) and (batch["images"][:, 2:-2, 2:-2] > 0.99).all()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="metadata.jsonl"):
        load_imagefolder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        load_imagefolder(tmp_path / "no_such_folder")


def test_webdataset_shards(tmp_path):
    for shard in range(2):
        with tarfile.open(tmp_path / f"shard-{shard:03d}.tar", "w") as tar:
            for k in range(3 * shard, 3 * shard + 3):
                for ext, data in (("png", _png(k)), ("txt", CAPTIONS[k].encode())):
                    info = tarfile.TarInfo(f"{k:05d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    data = load_webdataset(str(tmp_path / "shard-*.tar"), cache_dir=str(tmp_path / "cache"))
    assert data.image_column == "png" and len(data) == 6
    _check(_loaded_rows(data)[0])
    with pytest.raises(ValueError, match="available columns"):
        load_webdataset(
            str(tmp_path / "shard-000.tar"),
            caption_key="caption",
            cache_dir=str(tmp_path / "cache"),
        )


def test_open_clip_csv(tmp_path):
    (tmp_path / "images").mkdir()
    for k in range(6):
        _picture(k).save(tmp_path / "images" / f"{k}.png")
    rows = ["filepath\ttitle"] + [f"images/{k}.png\t{c}" for k, c in enumerate(CAPTIONS)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    data = load_csv(tmp_path / "train.csv", cache_dir=str(tmp_path / "cache"))
    _check(_loaded_rows(data)[0])
    # Comma-separated, other column names, absolute root, one missing file.
    rows = ["path,text"] + [f"{k}.png,{c}" for k, c in enumerate(CAPTIONS)] + ["gone.png,a shirt"]
    (tmp_path / "other.csv").write_text("\n".join(rows) + "\n")
    data = load_csv(
        tmp_path / "other.csv",
        image_column="path",
        caption_column="text",
        sep=",",
        image_root=tmp_path / "images",
        cache_dir=str(tmp_path / "cache"),
    )
    it = BatchIterator(
        data, TOKENIZER, batch_size=6, image_size=16, process_index=0, process_count=1
    )
    assert 6 not in next(it)["index"].tolist() and it.skipped == 1


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.parquet"):
        load_parquet(tmp_path / "nothing.parquet")
    with pytest.raises(FileNotFoundError, match="shards"):
        load_webdataset(str(tmp_path / "shards" / "*.tar"))
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        load_csv(tmp_path / "absent.csv")
    empty = datasets.Dataset.from_dict({"image": [], "caption": []})
    empty.to_parquet(str(tmp_path / "empty.parquet"))
    with pytest.raises(ValueError, match="holds no examples"):
        load_parquet(tmp_path / "empty.parquet", cache_dir=str(tmp_path / "cache"))


def test_super_batch_larger_than_dataset(tmp_path):
    table = datasets.Dataset.from_dict(
        {"image": [_picture(k) for k in range(6)], "caption": CAPTIONS}
    )
    table.cast_column("image", datasets.Image()).to_parquet(str(tmp_path / "small.parquet"))
    data = load_parquet(tmp_path / "small.parquet", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="batch_size=8 exceeds the dataset's 6 examples"):
        BatchIterator(
            data, TOKENIZER, batch_size=8, image_size=16, process_index=0, process_count=1
        )
    with pytest.raises(ValueError, match="image_size is required"):
        next(BatchIterator(data, TOKENIZER, batch_size=2, process_index=0, process_count=1))
