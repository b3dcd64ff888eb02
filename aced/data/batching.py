"""Fixed-size super-batches with deterministic shuffling, sharding and exact resume.

Each epoch e shuffles the N example ids with ``numpy.random.default_rng((seed,
e))``; process p of P takes every P-th id of that order (``perm[p::P]``) and
cuts it into consecutive per-process batches of B / P examples, dropping the
epoch's remainder. Without skipped images, global batch k is then the block
``perm[k*B:(k+1)*B]`` whatever P, its examples spread over the processes.

The iterator's state is ``(epoch, position)``: the next unread entry of this
process's order. Saving `BatchIterator.state` and passing it back as
``state=`` resumes with exactly the batches that would have followed.

A batch is a dict of numpy arrays: ``images`` float32 (b, H, W, C) in [-1, 1],
``tokens`` int32 (b, L), ``index`` int32 (b,) the global example ids (keys
for caching reference embeddings) and, for the built-in scenes, ``quality``
int32 (b,): diagnostics only, which training must not read.
"""

import dataclasses
from collections.abc import Callable, Iterator
from typing import Literal, Protocol, runtime_checkable

import jax
import numpy as np
import PIL.Image

from aced.data.images import BadImageError, resize_center_crop, to_model_images
from aced.data.scenes import SceneSplit

TOKEN_CACHE_SIZE = 1 << 17  # captions whose token rows a BatchIterator keeps (20 MB at L = 39)


@dataclasses.dataclass(frozen=True)
class LoadedExamples:
    """Examples fetched for a batch: images at the model's size and captions.

    **Fields:**

    - `images`: uint8 (k, H, W, C); rows of bad images are zeros.
    - `captions`: k captions; `ok`: bool (k,) whether each image decoded.
    - `errors`: a message per bad image (empty string for good ones).
    - `extras`: per-example int arrays carried into the batch (e.g. quality).
    """

    images: np.ndarray
    captions: list[str]
    ok: np.ndarray
    errors: list[str]
    extras: dict[str, np.ndarray]


@runtime_checkable
class ExampleSource(Protocol):
    """What `BatchIterator` reads from: a length and a way to load examples."""

    def __len__(self) -> int: ...

    def load(
        self, indices: np.ndarray, image_size: int | None, channels: int
    ) -> LoadedExamples: ...


@dataclasses.dataclass(frozen=True)
class SceneSource:
    """The built-in scenes as an `ExampleSource` (quality codes as an extra)."""

    split: SceneSplit

    def __len__(self) -> int:
        return len(self.split)

    def load(self, indices: np.ndarray, image_size: int | None, channels: int) -> LoadedExamples:
        """Scenes at `indices`, resized only when `image_size` differs from theirs."""
        images = self.split.images[indices]  # (k, H, W)
        h, w = images.shape[1:]
        if image_size is not None and (h, w) != (image_size, image_size):
            images = np.stack(
                [resize_center_crop(PIL.Image.fromarray(im), image_size, 1) for im in images]
            )
        images = images.reshape(*images.shape[:3], 1)  # a fresh array: `indices` copied it
        if channels != 1:
            images = np.repeat(images, channels, axis=-1)
        k = len(indices)
        return LoadedExamples(
            images,
            [self.split.captions[i] for i in indices],
            np.ones(k, dtype=bool),
            [""] * k,
            {"quality": self.split.quality[indices].astype(np.int32)},
        )


@dataclasses.dataclass(frozen=True)
class IteratorState:
    """Where a `BatchIterator` stands: epoch, and entries of its order read."""

    epoch: int = 0
    position: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> "IteratorState":
        return cls(int(d["epoch"]), int(d["position"]))


class BatchIterator(Iterator[dict[str, np.ndarray]]):
    """Endless (or `max_epochs`-long) stream of this process's batches.

    **Arguments:**

    - `source`: a `SceneSplit`, `SceneSource`, `aced.data.hf.ImageTextDataset`
      or any `ExampleSource`.
    - `tokenizer`: texts -> int32 (n, L), e.g. `aced.data.tokenize.TextTokenizer`; a
      function of each text alone (the iterator keeps the rows of up to
      `TOKEN_CACHE_SIZE` captions and tokenizes each of them once, not every epoch).
    - `batch_size`: B, the GLOBAL super-batch size; each process yields B / P.
    - `seed`: shuffling seed.
    - `image_size`: model resolution (required for photographs; the scenes'
      own size when None); `channels`: model input channels.
    - `process_index`, `process_count`: default `jax.process_index()` and
      `jax.process_count()`.
    - `on_bad_image`: ``"skip"`` (skip and count in `skipped`) or ``"error"``.
    - `state`: where to resume; `max_epochs`: stop after that many epochs
      (None: never stop).
    """

    def __init__(
        self,
        source: ExampleSource | SceneSplit,
        tokenizer: Callable[[list[str]], np.ndarray],
        *,
        batch_size: int,
        seed: int = 0,
        image_size: int | None = None,
        channels: int = 3,
        process_index: int | None = None,
        process_count: int | None = None,
        on_bad_image: Literal["skip", "error"] = "skip",
        state: IteratorState = IteratorState(),
        max_epochs: int | None = None,
    ):
        self.source = SceneSource(source) if isinstance(source, SceneSplit) else source
        self.tokenizer = tokenizer
        self.seed, self.image_size, self.channels = seed, image_size, channels
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        n = len(self.source)
        if n == 0:
            raise ValueError("the dataset is empty: it holds no examples to batch")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be positive")
        if not 0 <= self.process_index < self.process_count:
            raise ValueError(
                f"process_index={self.process_index} must be in "
                f"[0, process_count={self.process_count})"
            )
        if batch_size % self.process_count:
            raise ValueError(
                f"batch_size={batch_size} must be divisible by process_count={self.process_count}"
            )
        if batch_size > n:
            raise ValueError(
                f"batch_size={batch_size} exceeds the dataset's {n} examples; "
                "lower batch_size or use a larger dataset"
            )
        if on_bad_image not in ("skip", "error"):
            raise ValueError(f"on_bad_image={on_bad_image!r} must be 'skip' or 'error'")
        if channels not in (1, 3):
            raise ValueError(f"channels={channels} must be 1 or 3")
        self.batch_size, self.local_batch_size = batch_size, batch_size // self.process_count
        self.on_bad_image, self.max_epochs = on_bad_image, max_epochs
        self.skipped = 0
        self._state = state
        self._order_cache: tuple[int, np.ndarray] | None = None
        self._token_row: dict[str, int] = {}  # caption -> its row in _token_matrix
        self._token_matrix: np.ndarray | None = None  # (capacity, L) once a row is cached

    @property
    def state(self) -> IteratorState:
        """The state to save; pass it as ``state=`` to resume exactly here."""
        return self._state

    def order(self, epoch: int) -> np.ndarray:
        """This process's example ids in `epoch`'s order.

        The epoch's permutation, cut into global batches of B; process p takes
        the p-th contiguous B / P of each (and of the short last one), so that
        the processes' batches, concatenated in process order, are the batches
        of one process: the same global batch, row for row, for any P.
        """
        if self._order_cache is None or self._order_cache[0] != epoch:
            perm = np.random.default_rng((self.seed, epoch)).permutation(len(self.source))
            p, count, whole = self.process_index, self.process_count, self.batch_size
            full = len(perm) // whole * whole
            share, tail = self.local_batch_size, perm[full:]
            mine = perm[:full].reshape(-1, whole)[:, p * share : (p + 1) * share].ravel()
            cut = len(tail) // count
            self._order_cache = (epoch, np.concatenate([mine, tail[p * cut : (p + 1) * cut]]))
        return self._order_cache[1]

    def __next__(self) -> dict[str, np.ndarray]:
        epoch, position = self._state.epoch, self._state.position
        parts: list[tuple[np.ndarray, LoadedExamples]] = []
        need, failures_in_row = self.local_batch_size, 0
        while need > 0:
            if self.max_epochs is not None and epoch >= self.max_epochs:
                raise StopIteration
            order = self.order(epoch)
            if position + need > order.size:  # drop the epoch's remainder
                epoch, position = epoch + 1, 0
                continue
            ids = order[position : position + need]
            position += need
            loaded = self.source.load(ids, self.image_size, self.channels)
            bad = np.flatnonzero(~loaded.ok)
            if bad.size and self.on_bad_image == "error":
                i = bad[0]
                raise BadImageError(
                    f"example {int(ids[i])}: {loaded.errors[i]}; "
                    "pass on_bad_image='skip' to skip bad images"
                )
            self.skipped += int(bad.size)
            failures_in_row = failures_in_row + int(bad.size) if bad.size == ids.size else 0
            if failures_in_row > order.size:
                raise BadImageError(
                    f"no image of a whole epoch ({order.size} examples) could be decoded"
                )
            parts.append((ids[loaded.ok], loaded))
            need -= int(loaded.ok.sum())
        self._state = IteratorState(epoch, position)
        return self._assemble(parts)

    def _tokens(self, captions: list[str]) -> np.ndarray:
        """The tokenizer's rows of `captions`: captions seen before from the cache, the
        others in one call (an epoch's repeats cost a lookup, not a tokenization)."""
        index = self._token_row
        new = list(dict.fromkeys(c for c in captions if c not in index))
        if new:
            fresh = np.asarray(self.tokenizer(new), dtype=np.int32)
            if len(index) + len(new) > TOKEN_CACHE_SIZE:  # a dataset too large to repeat
                return self._uncached(captions, dict(zip(new, fresh)))
            self._cache_rows(new, fresh)
        return self._token_matrix[[index[c] for c in captions]]

    def _cache_rows(self, captions: list[str], rows: np.ndarray) -> None:
        """Append `rows` (one per caption) to the cache matrix, doubling its capacity."""
        used, matrix = len(self._token_row), self._token_matrix
        if matrix is None or used + len(rows) > len(matrix):
            grown = np.zeros((max(2 * used, used + len(rows)), rows.shape[1]), np.int32)
            if matrix is not None:
                grown[:used] = matrix[:used]
            self._token_matrix = matrix = grown
        matrix[used : used + len(rows)] = rows
        self._token_row.update(zip(captions, range(used, used + len(rows))))

    def _uncached(self, captions: list[str], fresh: dict[str, np.ndarray]) -> np.ndarray:
        index, matrix = self._token_row, self._token_matrix
        return np.stack([matrix[index[c]] if c in index else fresh[c] for c in captions])

    def _assemble(self, parts: list[tuple[np.ndarray, LoadedExamples]]) -> dict[str, np.ndarray]:
        keep = [p.ok for _, p in parts]
        images = np.concatenate([p.images[k] for (_, p), k in zip(parts, keep)])
        captions = [c for (_, p), k in zip(parts, keep) for c, good in zip(p.captions, k) if good]
        batch = {
            "images": to_model_images(images, self.channels),
            "tokens": self._tokens(captions),
            "index": np.concatenate([ids for ids, _ in parts]).astype(np.int32),
        }
        for name in parts[0][1].extras:
            batch[name] = np.concatenate([p.extras[name][k] for (_, p), k in zip(parts, keep)])
        return batch
