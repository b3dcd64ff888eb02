"""The frozen reference of a run: loaded from ``reference.path`` or trained
first on the curated split, checked against the learner, its own tokenizer,
its embeddings of every training example (``step.reference_embeddings="cached"``),
and what its training cost (``reference_flops``)."""

import functools
import pathlib
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import numpy as np
from beartype import beartype as typechecker
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Float32, jaxtyped

from aced.data import ExampleSource, load_hf_tokenizer, load_tokenizer, to_model_images
from aced.models import TwoTower, TwoTowerConfig
from aced.train.checkpoint import CHECKPOINTS, checkpoint_steps, is_model_dir, load_model, read_meta
from aced.train.config import RunConfig, reference_run
from aced.train.inputs import Tokenize
from aced.train.learners import MODEL_DIR, TOKENIZER_FILE, load_learner
from aced.train.logs import say
from aced.train.sharding import AXIS, embed_sharded, replicate

# Files that mark a transformers tokenizer (a converted Hugging Face checkpoint).
HF_TOKENIZER_MARKERS = ("spiece.model", "tokenizer_config.json")


def check_reference(
    reference: TwoTowerConfig,
    learner: TwoTowerConfig,
    *,
    width: int | None,
    origin: str,
    cached: bool = False,
) -> None:
    """Raise unless `reference` has the declared `width` and, unless `cached`,
    reads the learner's inputs.

    Scores and logit distillation compare each model's own pair logits, so
    the two embedding widths may differ (feature distillation learns a
    projection). Online, the reference embeds the learner's images and token
    ids; `cached` embeddings are computed once with the reference's own
    images and tokenizer, so its inputs may differ.
    """
    problems, inputs = [], []
    if width is not None and reference.embed_dim != width:
        problems.append(
            f"it embeds into width {reference.embed_dim}, not reference.embed_dim={width} "
            f"(use a reference of width {width}, or set reference.embed_dim={reference.embed_dim})"
        )
    ref_image, image = reference.image, learner.image
    if (ref_image.image_size, ref_image.channels) != (image.image_size, image.channels):
        inputs.append(
            f"it reads {ref_image.image_size}px images with {ref_image.channels} channel(s), "
            f"the learner {image.image_size}px with {image.channels} "
            "(model.image_size, model.channels)"
        )
    if reference.text.vocab_size != learner.text.vocab_size:
        inputs.append(
            f"its vocabulary has {reference.text.vocab_size} tokens, the learner's tokenizer "
            f"{learner.text.vocab_size} (data.tokenizer must be the reference's tokenizer)"
        )
    if reference.text.max_len < learner.text.max_len:
        inputs.append(
            f"it reads at most {reference.text.max_len} tokens, the learner's captions have "
            f"{learner.text.max_len} (set model.max_len={reference.text.max_len})"
        )
    if inputs and not cached:
        problems += inputs + [
            "or set step.reference_embeddings=cached to embed the data once with the reference's "
            "own image size, channels and tokenizer"
        ]
    if problems:
        raise ValueError(f"reference {origin} does not fit this run: " + "; ".join(problems))


def reference_tokenizer(
    reference: TwoTower, path: str | None, learner_tokenizer: Tokenize
) -> Tokenize:
    """The tokenizer `reference` was trained with: its directory's, else the learner's.

    **Arguments:**

    - `reference`: the loaded reference.
    - `path`: ``reference.path`` (a converted transformers checkpoint, an aced
      model or run directory), or None for a reference trained by this run.
    - `learner_tokenizer`: used when the directory carries no tokenizer file.

    **Returns:** captions -> int32 (n, L) with L at most the reference's
    ``text.max_len``; raises `ValueError` when its ids overflow the
    reference's vocabulary.
    """
    text = reference.config.text
    tokenizer = learner_tokenizer
    if path:
        model_dir = pathlib.Path(path) if is_model_dir(path) else pathlib.Path(path) / MODEL_DIR
        if any((model_dir / name).is_file() for name in HF_TOKENIZER_MARKERS):
            tokenizer = load_hf_tokenizer(model_dir, max_len=text.max_len)
        elif (model_dir / TOKENIZER_FILE).is_file():
            tokenizer = load_tokenizer(model_dir / TOKENIZER_FILE, max_len=text.max_len)
    if tokenizer.vocab_size > text.vocab_size or tokenizer.max_len > text.max_len:
        raise ValueError(
            f"reference {path}: its tokenizer ({tokenizer.vocab_size} tokens, captions of "
            f"{tokenizer.max_len}) does not fit its text tower ({text.vocab_size} tokens, at most "
            f"{text.max_len}); put the reference's tokenizer files next to its weights"
        )
    return tokenizer


_embed_sharded = eqx.filter_jit(embed_sharded)


@jaxtyped(typechecker=typechecker)
def cache_reference_embeddings(
    reference: TwoTower,
    source: ExampleSource,
    tokenizer: Tokenize,
    *,
    image_size: int,
    channels: int,
    mesh: Mesh,
    batch_size: int = 512,
    indices: np.ndarray | None = None,
) -> tuple[Float32[np.ndarray, "n D"], Float32[np.ndarray, "n D"]]:
    """The frozen reference's embeddings of every example, row i for example id i.

    **Arguments:**

    - `reference`: the reference model; `source`: all training examples.
    - `indices`: embed only these example ids (row i for ``indices[i]``); all by default.
    - `tokenizer`, `image_size`, `channels`: the reference's input pipeline
      (`reference_tokenizer`, ``reference.config.image``), which may differ
      from the learner's: only the embeddings enter the step.
    - `mesh`: the batch is embedded sharded over its ``data`` axis.
    - `batch_size`: examples per call (rounded up to the device count).

    **Returns:** float32 ``(zimg, ztxt)``, each (N, D) with N = ``len(source)``
    (or ``len(indices)``).
    Rows of images that fail to decode are embeddings of a blank image (the
    iterator never draws those examples). Under ``jax.distributed`` each
    process loads only its share of every batch; the embeddings are gathered.
    """
    devices = mesh.shape[AXIS]
    batch_size = -(-batch_size // devices) * devices
    reference = replicate(reference, mesh)
    indices = np.arange(len(source)) if indices is None else np.asarray(indices)
    n, width = len(indices), reference.config.embed_dim
    zimg, ztxt = np.zeros((n, width), np.float32), np.zeros((n, width), np.float32)
    put = functools.partial(jax.make_array_from_process_local_data, NamedSharding(mesh, P(AXIS)))
    local = batch_size // jax.process_count()  # each process loads its share of a batch
    me = jax.process_index()
    for start in range(0, n, batch_size):
        rows = np.arange(start, min(start + batch_size, n))
        mine = rows[me * local : (me + 1) * local]
        loaded = source.load(indices[mine], image_size, channels) if mine.size else None
        token_rows = tokenizer(loaded.captions if loaded else [])
        # Blank rows pad the batch: one shape, one compilation.
        images = np.zeros((local, image_size, image_size, channels), np.float32)
        tokens = np.zeros((local, token_rows.shape[1]), np.int32)
        tokens[: mine.size] = token_rows
        if loaded:
            images[: mine.size] = to_model_images(loaded.images, channels)
        zi, zt = _embed_sharded(reference, put(images), put(tokens), mesh)
        # Every process keeps the whole cache: its batches may hold any example.
        zi, zt = multihost_utils.process_allgather((zi, zt), tiled=True)
        zimg[rows], ztxt[rows] = zi[: rows.size], zt[: rows.size]
    return zimg, ztxt


def prepare_reference(
    run: RunConfig, learner: TwoTowerConfig, *, train: Callable[[RunConfig], dict[str, Any]]
) -> tuple[TwoTower, str] | None:
    """The frozen reference of `run` and where it came from; trains one first when none is given.

    **Arguments:**

    - `run`: the learner's run; `learner`: the learner's model configuration.
    - `train`: trains a run and returns its result (`aced.train.loop.train`);
      called with `reference_run(run)` when ``reference.path`` is empty and
      ``<out_dir>/reference/model`` does not exist yet.

    **Returns:** the reference and its origin; None when the method needs
    none (IID), and None too when the reference's own training was interrupted.
    """
    if not run.needs_reference:
        return None
    if run.reference.path:
        model, _, _ = load_learner(run.reference.path)
        origin = run.reference.path
    else:
        ref_run = reference_run(run)
        model_dir = pathlib.Path(ref_run.train.out_dir) / MODEL_DIR
        if not is_model_dir(model_dir):
            say(
                f"no reference.path given: training a reference on the curated split in "
                f"{ref_run.train.out_dir}"
            )
            result = train(ref_run)
            if result["interrupted"]:
                return None
        model, origin = load_model(model_dir), str(model_dir)
    check_reference(
        model.config,
        learner,
        width=run.reference.embed_dim,
        origin=origin,
        cached=run.step.reference_embeddings == "cached",
    )
    ref_flops, learner_flops = model.config.forward_flops(), learner.forward_flops()
    if ref_flops <= learner_flops:
        say(
            f"warning: the reference {origin} is not larger than the learner ({ref_flops:.3g} vs "
            f"{learner_flops:.3g} forward FLOPs per example); ACID and ACED assume a larger, "
            "better reference (set reference.image_variant / reference.text_variant, or "
            "reference.path)"
        )
    return model, origin


def reference_training_flops(origin: str) -> tuple[float, bool]:
    """The training FLOPs of the reference loaded from `origin`, as its aced run recorded them.

    **Arguments:**

    - `origin`: where `prepare_reference` found the reference: an aced run
      directory, one of its ``checkpoints/<step>`` directories or its
      ``model/`` folder (a reference trained here is ``<out_dir>/reference/model``),
      or any other model directory.

    **Returns:** ``(flops, known)``. For a reference of an aced run: the
    ``flops_cumulative`` of its checkpoint (the latest, or the one named),
    plus that run's own ``reference_flops``, so a reference's reference is
    counted too; ``known`` True unless that run's own reference cost was
    unknown (then the sum is a lower bound). For a model that no aced run records (a
    converted public checkpoint, a bare model directory): ``(0.0, False)``,
    with a note on stderr: its cost is unknown and counted as 0.
    """
    path, step = pathlib.Path(origin), None
    if path.parent.name == CHECKPOINTS and path.name.isdigit():
        path, step = path.parent.parent, int(path.name)
    elif path.name == MODEL_DIR and not checkpoint_steps(path):
        path = path.parent  # the model/ folder of a run directory
    if not checkpoint_steps(path):
        say(
            f"reference {origin}: no aced run recorded its training FLOPs, so its cost is "
            "unknown and counted as 0 (reference_flops=0: read the run as with a public "
            "pretrained reference)"
        )
        return 0.0, False
    meta = read_meta(path, step)
    flops = float(meta["flops_cumulative"]) + float(meta.get("reference_flops", 0.0))
    return flops, bool(meta.get("reference_flops_known", True))
