"""Fashion-MNIST idx reading: layout of the files, lookup order, clear errors."""

import gzip
import pathlib

import numpy as np
import pytest
from data.fmnist_fixture import fake_images, write_fake_fashion_mnist, write_idx

from aced.data import fashion_mnist
from aced.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist


@pytest.mark.parametrize("compress", [True, False])
def test_reads_what_was_written(tmp_path, compress):
    write_fake_fashion_mnist(tmp_path, n_train=30, n_test=20, compress=compress)
    for split, n, code in (("train", 30, 1), ("test", 20, 2)):
        images, labels = load_fashion_mnist(split, tmp_path)
        expected_images, expected_labels = fake_images(n, code, seed=code)
        assert images.dtype == np.uint8 and labels.dtype == np.uint8
        np.testing.assert_array_equal(images, expected_images)
        np.testing.assert_array_equal(labels, expected_labels)
        assert not images.flags.writeable  # shared in-memory copy must not be mutated


def test_env_var_is_used_when_no_argument(tmp_path, monkeypatch):
    write_fake_fashion_mnist(tmp_path, n_train=10, n_test=10)
    monkeypatch.setenv("ACED_DATA_DIR", str(tmp_path))
    assert fashion_mnist.resolve_data_dir() == tmp_path
    assert load_fashion_mnist("test")[0].shape == (10, 28, 28)
    monkeypatch.delenv("ACED_DATA_DIR")
    assert fashion_mnist.resolve_data_dir() == fashion_mnist.DEFAULT_DIR


def test_missing_directory_names_path_and_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere") as info:
        load_fashion_mnist("train", missing)
    assert "dataset-fashion-mnist" in str(info.value) and "ACED_DATA_DIR" in str(info.value)


def test_missing_file_names_path_and_fix(tmp_path):
    write_fake_fashion_mnist(tmp_path, n_train=10, n_test=10)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte") as info:
        load_fashion_mnist("test", tmp_path)
    assert "apt-get install dataset-fashion-mnist" in str(info.value)


def test_unreadable_files_are_reported(tmp_path):
    write_fake_fashion_mnist(tmp_path, n_train=10, n_test=10)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        load_fashion_mnist("train", tmp_path)
    # A valid gzip whose header announces more data than it holds.
    images, _ = fake_images(10, 2, seed=2)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    raw = gzip.decompress((tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-5]))
    with pytest.raises(ValueError, match="truncated"):
        load_fashion_mnist("test", tmp_path)
    # Labels file in place of an images file: wrong magic number.
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros(10, np.uint8))
    with pytest.raises(ValueError, match="magic"):
        load_fashion_mnist("test", tmp_path)


def test_bad_split_name():
    # The type checker (under pytest) or the function itself rejects it.
    with pytest.raises((ValueError, TypeError), match="validation"):
        load_fashion_mnist("validation")


def test_hub_loader_converts_a_datasets_table(monkeypatch):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    images, labels = fake_images(4, 2, seed=0)
    table = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(im) for im in images], "label": labels.tolist()}
    ).cast_column("image", datasets.Image())
    seen = {}

    def fake_load_dataset(name, split, cache_dir):
        seen["name"], seen["split"] = name, split
        return table

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    got_images, got_labels = fashion_mnist.load_fashion_mnist_hub("test")
    assert seen == {"name": "zalando-datasets/fashion_mnist", "split": "test"}
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.skipif(
    not (fashion_mnist.DEFAULT_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_files_have_the_published_layout():
    images, labels = load_fashion_mnist("test", fashion_mnist.DEFAULT_DIR)
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    # The test split is balanced: 1,000 images of each of the ten classes.
    np.testing.assert_array_equal(
        np.bincount(labels, minlength=10), np.full(len(CLASS_NAMES), 1000)
    )
    assert 60 < images.mean() < 90  # dark background, bright items (73.1 for the test split)
    assert pathlib.Path(fashion_mnist.DEFAULT_DIR).is_dir()
