"""A frozen reference's embeddings of a whole dataset, on disk (``aced embed``).

One directory holds ``manifest.json`` and shards ``embeddings-00000.safetensors``,
... (safetensors, never pickle), each with the example ids it covers (int64
``ids``) and float32 ``zimg`` / ``ztxt`` rows. The manifest records what the
embeddings depend on, as a `CacheKey`:

- the examples: their count and a fingerprint of 64 evenly spaced ones
  (captions, and images read at 16 x 16);
- the model: `aced.models.model_checksum` of the reference;
- the preprocessing: image size, channels, and the tokenizer (its ids of
  those captions, its vocabulary and length).

Every shard is written to a temporary name, checksummed and renamed, then
listed in the manifest (also replaced atomically): after a kill, a run resumes
from the shards the manifest lists, and no half-written shard is ever read.
`read_embeddings` refuses a cache whose key differs from the run's, names the
field that differs and the fix.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from safetensors.numpy import load_file, save_file

from aced.data import ExampleSource, TextTokenizer
from aced.flops import reference_cache_flops
from aced.models import TwoTower, model_checksum
from aced.train.logs import say
from aced.train.reference import cache_reference_embeddings

FORMAT = "aced-reference-embeddings/1"
MANIFEST = "manifest.json"
PARTIAL = ".partial"
FINGERPRINT_EXAMPLES = 64  # evenly spaced examples hashed into the data fingerprint
FINGERPRINT_SIZE = 16  # the side at which their images are hashed


@dataclasses.dataclass(frozen=True)
class CacheKey:
    """What a reference's embeddings of a dataset depend on (see the module docstring)."""

    num_examples: int
    embed_dim: int
    model: str
    preprocessing: dict[str, Any]
    data: str

    def mismatch(self, other: "CacheKey") -> str | None:
        """The first field where `other` (a cache) differs from this run, in words; or None."""
        if (other.num_examples, other.data) != (self.num_examples, self.data):
            return (
                f"its example ids are those of another dataset ({other.num_examples} examples, "
                f"fingerprint {other.data[:12]}; this run's data has {self.num_examples}, "
                f"{self.data[:12]})"
            )
        if (other.model, other.embed_dim) != (self.model, self.embed_dim):
            return (
                f"it was embedded by another model (checksum {other.model[:12]}, width "
                f"{other.embed_dim}; this run's reference: {self.model[:12]}, {self.embed_dim})"
            )
        if other.preprocessing != self.preprocessing:
            return (
                f"its preprocessing {other.preprocessing} is not the reference's "
                f"{self.preprocessing}"
            )
        return None


def cache_key(reference: TwoTower, source: ExampleSource, tokenizer: TextTokenizer) -> CacheKey:
    """The `CacheKey` of `reference`'s embeddings of `source` read through `tokenizer`
    at the reference's own image size and channels."""
    n, image = len(source), reference.config.image
    ids = np.unique(np.linspace(0, n - 1, min(n, FINGERPRINT_EXAMPLES)).round().astype(int))
    # The data's fingerprint reads images at one fixed size: it is the same whatever
    # the preprocessing, so a changed image size shows as preprocessing, not data.
    loaded = source.load(ids, FINGERPRINT_SIZE, 1)
    data = hashlib.sha256(f"{n}".encode() + "\0".join(loaded.captions).encode())
    data.update(np.ascontiguousarray(loaded.images).tobytes() + loaded.ok.tobytes())
    token_ids = np.ascontiguousarray(tokenizer(loaded.captions)).tobytes()
    preprocessing = {
        "image_size": image.image_size, "channels": image.channels,
        "max_len": tokenizer.max_len, "vocab_size": tokenizer.vocab_size,
        "tokenizer": hashlib.sha256(token_ids).hexdigest(),
    }  # fmt: skip
    model = model_checksum(reference)
    return CacheKey(n, reference.config.embed_dim, model, preprocessing, data.hexdigest())


def _sha256(path: pathlib.Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_json(path: pathlib.Path, content: dict[str, Any]) -> None:
    partial = path.with_name(path.name + PARTIAL)
    partial.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(partial, path)


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The manifest of an ``aced embed`` directory; raises when it is none."""
    path = pathlib.Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {directory} is no aced embed directory (write one with "
            "`aced embed REFERENCE data.key=value ... --out DIR`)"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    return manifest


def _manifest_key(manifest: dict[str, Any]) -> CacheKey:
    return CacheKey(**{f.name: manifest[f.name] for f in dataclasses.fields(CacheKey)})


def _shard_intact(directory: pathlib.Path, shard: dict[str, Any]) -> bool:
    path = directory / shard["file"]
    return path.is_file() and _sha256(path) == shard["sha256"]


def write_embeddings(
    out: str | os.PathLike,
    reference: TwoTower,
    source: ExampleSource,
    tokenizer: TextTokenizer,
    *,
    mesh: Mesh,
    shard_size: int = 8192,
    batch_size: int = 512,
    progress: bool = True,
    origin: str = "",
) -> dict[str, Any]:
    """Embed every example of `source` with `reference` into shards under `out`; resumable.

    **Arguments:**

    - `out`: the directory; shards that an earlier, interrupted call with the
      same key wrote and checksummed are kept, damaged or missing ones rewritten.
    - `reference`, `tokenizer`: the frozen model and its tokenizer; images are
      read at the reference's own size and channels.
    - `mesh`: each batch is embedded sharded over its ``data`` axis.
    - `shard_size`: examples per shard, a multiple of `batch_size` (so a shard
      is whole batches, as in `cache_reference_embeddings`).
    - `origin`: where the reference came from, recorded in the manifest.

    **Returns:** the manifest, ``complete`` True. Raises `ValueError` when `out`
    holds embeddings of another key. Under ``jax.distributed`` every process
    embeds its share of each batch and process 0 alone writes.
    """
    from tqdm.auto import tqdm

    if shard_size % batch_size:
        raise ValueError(
            f"shard size {shard_size} is not a multiple of the batch size {batch_size} "
            "(--shard-size, --batch-size)"
        )
    directory = pathlib.Path(out)
    key, n = cache_key(reference, source, tokenizer), len(source)
    manifest = {
        "format": FORMAT, **dataclasses.asdict(key), "shard_size": shard_size,
        "reference": origin, "complete": False, "shards": [],
        "flops": float(reference_cache_flops(reference.config, n, tokenizer.max_len)),
    }  # fmt: skip
    if (directory / MANIFEST).is_file():
        old = read_manifest(directory)
        problem = key.mismatch(_manifest_key(old))
        if problem is None and old["shard_size"] != shard_size:
            problem = f"its shards hold {old['shard_size']} examples, not {shard_size}"
        if problem:
            raise ValueError(
                f"{directory} holds other embeddings: {problem}; pass an empty --out "
                "directory, or delete this one"
            )
        manifest["shards"] = [s for s in old["shards"] if _shard_intact(directory, s)]
    writes = jax.process_index() == 0  # every process embeds (all-gathered), one writes
    if writes:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(f"*{PARTIAL}"):
            stale.unlink()  # a shard or manifest a kill interrupted
    done = {s["start"] for s in manifest["shards"]}
    starts = range(0, n, shard_size)
    bar = tqdm(total=n, desc="embed", unit=" examples", disable=not progress)
    bar.update(sum(s["stop"] - s["start"] for s in manifest["shards"]))
    for index, start in enumerate(starts):
        if start in done:
            continue
        ids = np.arange(start, min(start + shard_size, n), dtype=np.int64)
        zimg, ztxt = cache_reference_embeddings(
            reference, source, tokenizer, image_size=key.preprocessing["image_size"],
            channels=key.preprocessing["channels"], mesh=mesh, batch_size=batch_size, indices=ids,
        )  # fmt: skip
        bar.update(ids.size)
        if not writes:
            continue
        name = f"embeddings-{index:05d}.safetensors"
        partial = directory / (name + PARTIAL)
        save_file({"ids": ids, "zimg": zimg, "ztxt": ztxt}, str(partial), {"format": FORMAT})
        digest = _sha256(partial)
        os.replace(partial, directory / name)
        shard = {"file": name, "start": start, "stop": int(ids[-1]) + 1, "sha256": digest}
        manifest["shards"] = sorted([*manifest["shards"], shard], key=lambda s: s["start"])
        _write_json(directory / MANIFEST, manifest)
    bar.close()
    manifest["complete"] = True
    if writes:
        _write_json(directory / MANIFEST, manifest)
    return manifest


def read_embeddings(directory: str | os.PathLike, key: CacheKey) -> tuple[np.ndarray, np.ndarray]:
    """The cached ``(zimg, ztxt)`` of `directory`, row i for example id i.

    **Arguments:**

    - `directory`: written by `write_embeddings` (``aced embed``).
    - `key`: this run's `cache_key`; a cache of other examples, another model
      or other preprocessing is refused.

    **Returns:** float32 (N, D) each. Raises `ValueError` naming the problem
    and the fix for a mismatched, incomplete or damaged cache.
    """
    directory = pathlib.Path(directory)
    manifest = read_manifest(directory)
    problem = key.mismatch(_manifest_key(manifest))
    if problem:
        raise ValueError(
            f"reference.embeddings={directory} does not fit this run: {problem}; embed this "
            "run's data with this reference (`aced embed`), or unset reference.embeddings"
        )
    rerun = f"run `aced embed` with --out {directory} again to finish it"
    if not manifest["complete"]:
        raise ValueError(f"reference.embeddings={directory} is incomplete: {rerun}")
    zimg = np.zeros((key.num_examples, key.embed_dim), np.float32)
    ztxt, covered = np.zeros_like(zimg), np.zeros(key.num_examples, bool)
    for shard in manifest["shards"]:
        if not _shard_intact(directory, shard):
            raise ValueError(
                f"reference.embeddings: {directory / shard['file']} is missing or damaged "
                f"(its SHA-256 differs from the manifest's): {rerun}"
            )
        arrays = load_file(str(directory / shard["file"]))
        ids = arrays["ids"]
        zimg[ids], ztxt[ids], covered[ids] = arrays["zimg"], arrays["ztxt"], True
    if not covered.all():
        raise ValueError(
            f"reference.embeddings={directory} lacks example ids "
            f"{np.flatnonzero(~covered)[:5].tolist()}...: {rerun}"
        )
    return zimg, ztxt


def reference_cache(
    reference: TwoTower,
    frozen: TwoTower,
    source: ExampleSource,
    tokenizer: TextTokenizer,
    *,
    mesh: Mesh,
    directory: str | None,
) -> tuple[tuple[np.ndarray, np.ndarray], float]:
    """The run's cached reference embeddings (``step.reference_embeddings=cached``) and their FLOPs.

    **Arguments:**

    - `reference`: the reference on the host; `frozen`: it replicated over `mesh`.
    - `tokenizer`: the reference's own (`aced.train.reference.reference_tokenizer`).
    - `directory`: ``reference.embeddings``, an ``aced embed`` directory to read
      (checked against this run's `cache_key`); None embeds the data here.

    **Returns:** ``((zimg, ztxt), flops)``: the one-off pass's FLOPs are charged
    either way, as the run would have spent them itself.
    """
    image = reference.config.image
    flops = float(reference_cache_flops(reference.config, len(source), tokenizer.max_len))
    if directory:
        say(f"reading the reference's embeddings of the {len(source)} examples from {directory}")
        return read_embeddings(directory, cache_key(reference, source, tokenizer)), flops
    say(
        f"embedding the {len(source)} training examples with the reference once "
        f"({image.image_size}px)"
    )
    cache = cache_reference_embeddings(
        frozen, source, tokenizer, image_size=image.image_size, channels=image.channels, mesh=mesh
    )
    return cache, flops
