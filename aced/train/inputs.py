"""A run's inputs: its tokenizer, its training examples, and the sharded
`SuperBatch` the step reads, built from one iterator batch."""

from collections.abc import Callable, Sequence

import jax
import numpy as np
from beartype import beartype as typechecker
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Float32, jaxtyped

from aced.data import (
    ExampleSource,
    SceneSource,
    TextTokenizer,
    builtin_tokenizer,
    curated_split,
    load_tokenizer,
    web_split,
)
from aced.train.config import DataConfig, RunConfig
from aced.train.sharding import AXIS
from aced.train.state import SuperBatch

# Captions -> int32 (n, L) token ids, e.g. a `TextTokenizer`.
Tokenize = Callable[[Sequence[str]], np.ndarray]


def build_tokenizer(run: RunConfig) -> TextTokenizer:
    """``data.tokenizer`` when given, else the built-in word tokenizer of the scene captions."""
    if run.data.tokenizer:
        return load_tokenizer(run.data.tokenizer, max_len=run.model.max_len)
    return builtin_tokenizer(max_len=run.model.max_len)


def _builtin(data: DataConfig) -> ExampleSource:
    make = {"web": web_split, "curated": curated_split}[data.split]
    return SceneSource(make(data.size, seed=data.seed))


def _columns(data: DataConfig, *names: str) -> dict[str, str]:
    return {name: getattr(data, name) for name in names if getattr(data, name)}


def _files(load: str, *columns: str) -> Callable[[DataConfig], ExampleSource]:
    """A loader of `aced.data.hf` (imported only when used: it brings HF datasets)."""

    def build(data: DataConfig) -> ExampleSource:
        from aced.data import hf

        return getattr(hf, load)(data.path, **_columns(data, *columns))

    return build


# data.source -> how its examples are built.
DATA_SOURCES: dict[str, Callable[[DataConfig], ExampleSource]] = {
    "builtin": _builtin,
    "parquet": _files("load_parquet", "image_column", "caption_column"),
    "csv": _files("load_csv", "image_column", "caption_column"),
    "imagefolder": _files("load_imagefolder", "caption_column"),
    "webdataset": _files("load_webdataset"),
}


def build_source(data: DataConfig) -> ExampleSource:
    """The training examples named by ``data`` (built-in scenes or files read with HF datasets)."""
    source = DATA_SOURCES[data.source](data)
    if data.source != "builtin" and data.super_batch_size > len(source):
        raise ValueError(
            f"data.super_batch_size={data.super_batch_size} exceeds the {len(source)} examples of "
            f"{data.path}; lower the super-batch or use more data"
        )
    return source


def _put(x: np.ndarray, mesh: Mesh) -> jax.Array:
    # Each process holds its rows of the global batch; sharded over "data".
    return jax.make_array_from_process_local_data(NamedSharding(mesh, P(AXIS)), x)


@jaxtyped(typechecker=typechecker)
def super_batch(
    batch: dict[str, np.ndarray],
    mesh: Mesh,
    cache: tuple[Float32[np.ndarray, "n D"], Float32[np.ndarray, "n D"]] | None,
) -> SuperBatch:
    """A `SuperBatch` sharded over the mesh from an iterator batch, with cached reference rows.

    **Arguments:**

    - `batch`: this process's rows (``images``, ``tokens``, ``index``) from `BatchIterator`.
    - `mesh`: rows are sharded over its ``data`` axis.
    - `cache`: the reference's embeddings of every example
      (`aced.train.reference.cache_reference_embeddings`), or None.

    **Returns:** the global `SuperBatch`.
    """
    zimg = ztxt = None
    if cache is not None:
        zimg, ztxt = _put(cache[0][batch["index"]], mesh), _put(cache[1][batch["index"]], mesh)
    return SuperBatch(
        images=_put(batch["images"], mesh),
        tokens=_put(batch["tokens"], mesh),
        index=_put(batch["index"], mesh),
        reference_zimg=zimg,
        reference_ztxt=ztxt,
    )
