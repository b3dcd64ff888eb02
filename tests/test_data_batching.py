"""Super-batches: contents line up with the data, epochs cover the data once,
processes split each global batch, and a saved state resumes exactly."""

import dataclasses

import numpy as np
import pytest

from aced.data import (
    BadImageError,
    BatchIterator,
    IteratorState,
    LoadedExamples,
    SceneConfig,
    builtin_tokenizer,
    make_scenes,
    to_model_images,
)

TOKENIZER = builtin_tokenizer()


@pytest.fixture(scope="module")
def split():
    pool = (np.arange(20 * 28 * 28).reshape(20, 28, 28) % 200 + 20).astype(np.uint8)
    labels = (np.arange(20) % 10).astype(np.uint8)
    return make_scenes(pool, labels, 100, SceneConfig(), np.random.default_rng(0))


def _take(it, k):
    return [next(it) for _ in range(k)]


def test_batch_contents_line_up(split):
    it = BatchIterator(
        split, TOKENIZER, batch_size=16, seed=3, channels=3, process_index=0, process_count=1
    )
    batch = next(it)
    idx = batch["index"]
    assert batch["images"].dtype == np.float32 and batch["images"].shape == (16, 56, 56, 3)
    assert batch["tokens"].dtype == np.int32 and batch["tokens"].shape == (16, TOKENIZER.max_len)
    assert batch["index"].dtype == np.int32 and batch["quality"].dtype == np.int32
    np.testing.assert_array_equal(batch["images"], to_model_images(split.images[idx], 3))
    np.testing.assert_array_equal(batch["tokens"], TOKENIZER([split.captions[i] for i in idx]))
    np.testing.assert_array_equal(batch["quality"], split.quality[idx])
    assert batch["images"].min() >= -1.0 and batch["images"].max() <= 1.0
    grey = next(
        BatchIterator(split, TOKENIZER, batch_size=4, channels=1, process_index=0, process_count=1)
    )
    assert grey["images"].shape == (4, 56, 56, 1)
    want = split.images[grey["index"]].astype(np.float32)[..., None] / np.float32(127.5) - 1
    np.testing.assert_array_equal(grey["images"], want)  # the same roundings, written out


def test_model_images_known_values():
    grey = np.array([[[0, 51], [128, 255]]], np.uint8)  # (1, 2, 2)
    want = np.array([-1.0, 51 / 127.5 - 1, 128 / 127.5 - 1, 1.0], np.float32).reshape(1, 2, 2, 1)
    np.testing.assert_allclose(to_model_images(grey, 1), want, rtol=0, atol=1e-7)
    assert to_model_images(grey, 1)[0, 0, 0, 0] == -1.0 and to_model_images(grey, 1).max() == 1.0
    rgb = to_model_images(grey, 3)
    assert rgb.dtype == np.float32 and rgb.shape == (1, 2, 2, 3)
    np.testing.assert_array_equal(rgb, np.repeat(to_model_images(grey, 1), 3, axis=-1))
    np.testing.assert_array_equal(to_model_images(grey[..., None], 1), to_model_images(grey, 1))
    with pytest.raises(ValueError, match="2 channels; the model expects 3"):
        to_model_images(np.zeros((1, 2, 2, 2), np.uint8), 3)


def test_epochs_cover_each_example_once(split):
    it = BatchIterator(split, TOKENIZER, batch_size=30, seed=0, process_index=0, process_count=1)
    epoch0 = np.concatenate([b["index"] for b in _take(it, 3)])  # 100 // 30 = 3 batches, 10 dropped
    assert len(set(epoch0.tolist())) == 90 and it.state == IteratorState(0, 90)
    epoch1 = np.concatenate([b["index"] for b in _take(it, 3)])
    assert len(set(epoch1.tolist())) == 90 and it.state == IteratorState(1, 90)
    assert not np.array_equal(epoch0, epoch1)  # reshuffled


def test_each_caption_is_tokenized_once_and_reads_back_the_same(split, monkeypatch):
    seen: list[str] = []

    def counting(texts):
        seen.extend(texts)
        return TOKENIZER(texts)

    it = BatchIterator(split, counting, batch_size=30, seed=0, process_index=0, process_count=1)
    for batch in _take(it, 9):  # three epochs
        want = TOKENIZER([split.captions[i] for i in batch["index"]])
        np.testing.assert_array_equal(batch["tokens"], want)
        assert batch["tokens"].dtype == np.int32
    assert sorted(seen) == sorted(set(seen))  # no caption twice
    assert set(seen) == {split.captions[i] for i in range(len(split.captions))}
    # Past the cache's size the rows are still right, tokenized again.
    monkeypatch.setattr("aced.data.batching.TOKEN_CACHE_SIZE", 10)
    it = BatchIterator(split, counting, batch_size=30, seed=0, process_index=0, process_count=1)
    seen.clear()
    for batch in _take(it, 6):
        want = TOKENIZER([split.captions[i] for i in batch["index"]])
        np.testing.assert_array_equal(batch["tokens"], want)
    assert len(seen) > len(set(seen))


def test_resume_from_saved_state_is_exact(split):
    it = BatchIterator(split, TOKENIZER, batch_size=24, seed=5, process_index=0, process_count=1)
    _take(it, 3)
    saved = IteratorState.from_dict(it.state.to_dict())
    rest = _take(it, 4)  # crosses an epoch boundary (4 batches per epoch)
    resumed = BatchIterator(
        split, TOKENIZER, batch_size=24, seed=5, process_index=0, process_count=1, state=saved
    )
    for a, b in zip(rest, _take(resumed, 4)):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_processes_split_the_global_batch(split):
    single = BatchIterator(
        split, TOKENIZER, batch_size=20, seed=1, process_index=0, process_count=1
    )
    shards = [
        BatchIterator(split, TOKENIZER, batch_size=20, seed=1, process_index=p, process_count=2)
        for p in range(2)
    ]
    for _ in range(6):
        whole = next(single)["index"]
        parts = [next(s)["index"] for s in shards]
        assert all(p.shape == (10,) for p in parts)
        # row for row the one-process batch: a multi-process run trains on the same batches
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_seed_determines_order(split):
    a = next(
        BatchIterator(split, TOKENIZER, batch_size=8, seed=0, process_index=0, process_count=1)
    )["index"]
    b = next(
        BatchIterator(split, TOKENIZER, batch_size=8, seed=0, process_index=0, process_count=1)
    )["index"]
    c = next(
        BatchIterator(split, TOKENIZER, batch_size=8, seed=1, process_index=0, process_count=1)
    )["index"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_max_epochs_stops(split):
    it = BatchIterator(
        split, TOKENIZER, batch_size=50, process_index=0, process_count=1, max_epochs=2
    )
    assert len(list(it)) == 4


@dataclasses.dataclass
class FlakySource:
    """n examples; those whose id is in `bad` fail to decode."""

    n: int
    bad: frozenset

    def __len__(self):
        return self.n

    def load(self, indices, image_size, channels):
        ok = np.array([int(i) not in self.bad for i in indices])
        images = np.broadcast_to(
            np.asarray(indices, np.uint8)[:, None, None, None], (len(indices), 4, 4, channels)
        )
        return LoadedExamples(
            images * ok[:, None, None, None],
            [f"a bag {int(i)}" for i in indices],
            ok,
            ["" if g else f"broken {int(i)}" for i, g in zip(indices, ok)],
            {},
        )


def test_bad_images_are_skipped_and_counted_or_raised():
    source = FlakySource(40, frozenset(range(0, 40, 4)))  # a quarter is bad
    it = BatchIterator(
        source, TOKENIZER, batch_size=8, seed=2, image_size=4, process_index=0, process_count=1
    )
    batches = _take(it, 3)
    seen = np.concatenate([b["index"] for b in batches])
    assert all(b["images"].shape == (8, 4, 4, 3) for b in batches)
    # Still in epoch 0: the batches are exactly the good ids of the order read so far.
    assert it.state.epoch == 0
    read = it.order(0)[: it.state.position].tolist()
    assert seen.tolist() == [i for i in read if i not in source.bad]
    assert it.skipped == sum(i in source.bad for i in read) > 0
    # Pixels encode the id: each batch row shows its own example.
    np.testing.assert_array_equal(
        batches[0]["images"][:, 0, 0, 0], seen[:8].astype(np.float32) / 127.5 - 1
    )
    # Resuming mid-stream with skips is still exact.
    again = BatchIterator(
        source, TOKENIZER, batch_size=8, seed=2, image_size=4, process_index=0, process_count=1
    )
    _take(again, 2)
    resumed = BatchIterator(
        source,
        TOKENIZER,
        batch_size=8,
        seed=2,
        image_size=4,
        process_index=0,
        process_count=1,
        state=again.state,
    )
    np.testing.assert_array_equal(next(resumed)["index"], batches[2]["index"])

    strict = BatchIterator(
        source,
        TOKENIZER,
        batch_size=8,
        seed=2,
        image_size=4,
        process_index=0,
        process_count=1,
        on_bad_image="error",
    )
    with pytest.raises(BadImageError, match=r"example \d+: broken \d+; pass on_bad_image='skip'"):
        _take(strict, 5)

    hopeless = BatchIterator(
        FlakySource(10, frozenset(range(10))),
        TOKENIZER,
        batch_size=2,
        image_size=4,
        process_index=0,
        process_count=1,
    )
    with pytest.raises(BadImageError, match="whole epoch"):
        next(hopeless)


def test_bad_arguments(split):
    kw = dict(process_index=0, process_count=1)
    with pytest.raises(ValueError, match="empty"):
        BatchIterator(FlakySource(0, frozenset()), TOKENIZER, batch_size=1, **kw)
    with pytest.raises(ValueError, match="batch_size=101 exceeds the dataset's 100 examples"):
        BatchIterator(split, TOKENIZER, batch_size=101, **kw)
    with pytest.raises(ValueError, match="divisible by process_count=3"):
        BatchIterator(split, TOKENIZER, batch_size=10, process_index=0, process_count=3)
    with pytest.raises(ValueError, match="process_index=2"):
        BatchIterator(split, TOKENIZER, batch_size=10, process_index=2, process_count=2)
    with pytest.raises((ValueError, TypeError), match="ignore"):  # type checker or the function
        BatchIterator(split, TOKENIZER, batch_size=10, on_bad_image="ignore", **kw)
    with pytest.raises(ValueError, match="batch_size=0"):
        BatchIterator(split, TOKENIZER, batch_size=0, **kw)


def test_process_defaults_come_from_jax(split):
    it = BatchIterator(split, TOKENIZER, batch_size=10)
    assert (it.process_index, it.process_count) == (0, 1)
