"""The training loop: data, learner, reference, the jitted step, logs, evaluation, checkpoints.

``train(run_config)`` runs one `RunConfig` in ``train.out_dir``:

- builds the tokenizer, the training examples and a resumable super-batch
  iterator; the learner; the reference (loaded from ``reference.path``, or
  trained first on the curated split under ``<out_dir>/reference`` when the
  method needs one and none is given); optionally the reference's embeddings
  of every example (``step.reference_embeddings="cached"``), computed with the
  reference's own image size, channels and tokenizer;
- runs the jitted step with a tqdm bar (loss, examples/s, ETA), writes
  ``metrics.jsonl`` and TensorBoard events (``tb/``), every record carrying
  the cumulative training FLOPs (``flops_cumulative``); evaluates every
  ``train.eval_every`` steps and at the end (``eval.json``);
- saves a checkpoint every ``train.checkpoint_every`` steps and at the end,
  resumes from the latest one found in ``out_dir``, saves and returns on
  SIGINT / SIGTERM, and stops on a non-finite loss (`TrainingDiverged`);
- exports the final learner to ``<out_dir>/model`` (`save_model` files plus
  ``tokenizer.json``).

Run directory layout: ``run_config.json``, ``checkpoints/<step>/``,
``metrics.jsonl``, ``tb/``, ``eval.json``, ``model/``, ``reference/``.
"""

import functools
import json
import math
import pathlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import numpy as np
from beartype import beartype as typechecker
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jaxtyping import Float32, jaxtyped

from aced.data import (
    BatchIterator,
    ExampleSource,
    IteratorState,
    SceneSource,
    TextTokenizer,
    builtin_tokenizer,
    curated_split,
    load_hf_tokenizer,
    load_tokenizer,
    save_tokenizer,
    to_model_images,
    web_split,
)
from aced.models import TwoTower, TwoTowerConfig
from aced.train.checkpoint import (
    checkpoint_steps,
    is_model_dir,
    load_model,
    open_checkpoints,
    read_meta,
    restore_checkpoint,
    save_checkpoint,
    save_model,
)
from aced.train.run_config import (
    BUILTIN_IMAGE_SIZE,
    DataConfig,
    RunConfig,
    from_dict,
    reference_run,
    to_dict,
)
from aced.train.config import StepConfig
from aced.train.state import SuperBatch, TrainState, init_train_state
from aced.train.sharding import AXIS, default_mesh, embed_sharded, replicate
from aced.train.step import check_step_shapes, make_train_step

METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.json"
MODEL_DIR = "model"
TOKENIZER_FILE = "tokenizer.json"
# Files that mark a transformers tokenizer (a converted Hugging Face checkpoint).
HF_TOKENIZER_MARKERS = ("spiece.model", "tokenizer_config.json")
EVAL_SUITE_SEED = 0  # one fixed suite, so that every run is scored on the same images


# Captions -> int32 (n, L) token ids: a `TextTokenizer` or a `load_hf_tokenizer` result.
Tokenize = Callable[[Sequence[str]], np.ndarray]


class TrainingDiverged(FloatingPointError):
    """A loss term or training statistic became NaN or infinite."""


def say(message: str) -> None:
    """A progress line on stderr (stdout is left to results)."""
    print(f"aced: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data


def build_tokenizer(run: RunConfig) -> TextTokenizer:
    """``data.tokenizer`` when given, else the built-in word tokenizer of the scene captions."""
    if run.data.tokenizer:
        return load_tokenizer(run.data.tokenizer, max_len=run.model.max_len)
    return builtin_tokenizer(max_len=run.model.max_len)


def build_source(data: DataConfig) -> ExampleSource:
    """The training examples named by ``data`` (built-in scenes or files read with HF datasets)."""
    if data.source == "builtin":
        make = web_split if data.split == "web" else curated_split
        return SceneSource(make(data.size, seed=data.seed))
    from aced.data import hf

    columns = {"image_column": data.image_column, "caption_column": data.caption_column}
    if data.source == "parquet":
        source = hf.load_parquet(data.path, **{k: v for k, v in columns.items() if v})
    elif data.source == "csv":
        source = hf.load_csv(data.path, **{k: v for k, v in columns.items() if v})
    elif data.source == "imagefolder":
        source = hf.load_imagefolder(data.path, **({"caption_column": data.caption_column} if data.caption_column else {}))
    else:
        source = hf.load_webdataset(data.path)
    if data.super_batch_size > len(source):
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
    - `cache`: the reference's embeddings of every example (`cache_reference_embeddings`), or None.

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
) -> tuple[Float32[np.ndarray, "n D"], Float32[np.ndarray, "n D"]]:
    """The frozen reference's embeddings of every example, row i for example id i.

    **Arguments:**

    - `reference`: the reference model; `source`: all training examples.
    - `tokenizer`, `image_size`, `channels`: the reference's input pipeline
      (`reference_tokenizer`, ``reference.config.image``), which may differ
      from the learner's: only the embeddings enter the step.
    - `mesh`: the batch is embedded sharded over its ``data`` axis.
    - `batch_size`: examples per call (rounded up to the device count).

    **Returns:** float32 ``(zimg, ztxt)``, each (N, D) with N = ``len(source)``.
    Rows of images that fail to decode are embeddings of a blank image (the
    iterator never draws those examples).
    """
    devices = mesh.shape[AXIS]
    batch_size = -(-batch_size // devices) * devices
    reference = replicate(reference, mesh)
    n, width = len(source), reference.config.embed_dim
    zimg, ztxt = np.zeros((n, width), np.float32), np.zeros((n, width), np.float32)
    for start in range(0, n, batch_size):
        ids = np.arange(start, min(start + batch_size, n))
        loaded = source.load(ids, image_size, channels)
        images, tokens = to_model_images(loaded.images, channels), tokenizer(loaded.captions)
        pad = batch_size - ids.size  # one shape, one compilation
        images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
        tokens = np.concatenate([tokens, np.zeros((pad, tokens.shape[1]), tokens.dtype)])
        sharding = NamedSharding(mesh, P(AXIS))
        zi, zt = _embed_sharded(reference, jax.device_put(images, sharding), jax.device_put(tokens, sharding), mesh)
        # Every process keeps the whole cache: its batches may hold any example.
        zi, zt = multihost_utils.process_allgather((zi, zt), tiled=True)
        zimg[ids], ztxt[ids] = zi[: ids.size], zt[: ids.size]
    return zimg, ztxt


# ---------------------------------------------------------------- models


def _on_one_device(model: Any) -> Any:
    arrays, static = eqx.partition(model, eqx.is_array)
    return eqx.combine(jax.device_put(arrays, jax.devices()[0]), static)


def check_reference(
    reference: TwoTowerConfig, learner: TwoTowerConfig, *, width: int | None, origin: str, cached: bool = False
) -> None:
    """Raise unless `reference` has the declared `width` and, unless `cached`, reads the learner's inputs.

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
    if (reference.image.image_size, reference.image.channels) != (learner.image.image_size, learner.image.channels):
        inputs.append(
            f"it reads {reference.image.image_size}px images with {reference.image.channels} channel(s), "
            f"the learner {learner.image.image_size}px with {learner.image.channels} (model.image_size, model.channels)"
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


def reference_tokenizer(reference: TwoTower, path: str | None, learner_tokenizer: Tokenize) -> Tokenize:
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


def template_state(model: TwoTowerConfig, run: RunConfig, teacher_width: int | None) -> TrainState:
    """The abstract (``jax.ShapeDtypeStruct``) `TrainState` of a run, to restore checkpoints into."""

    def build() -> TrainState:
        learner = TwoTower(model, key=jax.random.key(0))
        return init_train_state(learner, run.step, jax.random.key(0), teacher_width=teacher_width)

    return eqx.filter_eval_shape(build)


def load_learner(path: str | pathlib.Path) -> tuple[TwoTower, TextTokenizer, RunConfig | None]:
    """The learner saved at `path`, its tokenizer, and its run config when known.

    `path` is a model directory (``config.json`` + ``model.safetensors``), a
    run directory (its latest checkpoint; ``model/`` when it has none) or one
    step directory ``<run>/checkpoints/<step>``.
    """
    path = pathlib.Path(path)
    step = None
    if path.parent.name == "checkpoints" and path.name.isdigit():
        path, step = path.parent.parent, int(path.name)
    if checkpoint_steps(path):
        meta = read_meta(path, step)
        run = from_dict(RunConfig, meta["run_config"])
        template = template_state(TwoTowerConfig.from_dict(meta["model"]), run, meta.get("teacher_width"))
        state, _ = restore_checkpoint(path, template, step=meta["step"])
        return state.learner, build_tokenizer(run), run
    model_dir = path if is_model_dir(path) else path / MODEL_DIR
    if not is_model_dir(model_dir):
        raise FileNotFoundError(
            f"{path} holds neither checkpoints nor model files (config.json + model.safetensors); "
            "pass a run directory of `aced train`, its model/ folder, or a converted model"
        )
    model = load_model(model_dir)
    run = None
    if (model_dir.parent / "run_config.json").is_file():
        run = from_dict(RunConfig, json.loads((model_dir.parent / "run_config.json").read_text()))
    if (model_dir / TOKENIZER_FILE).is_file():
        tokenizer = load_tokenizer(model_dir / TOKENIZER_FILE)
    else:
        tokenizer = builtin_tokenizer(max_len=model.config.text.max_len)
    return model, tokenizer, run


def prepare_reference(run: RunConfig, learner: TwoTowerConfig) -> tuple[TwoTower, str] | None:
    """The frozen reference of `run` and where it came from; trains one first when none is given.

    Returns None when the method needs none (IID), and `None` too when the
    reference's own training was interrupted.
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
            say(f"no reference.path given: training a reference on the curated split in {ref_run.train.out_dir}")
            result = train(ref_run)
            if result["interrupted"]:
                return None
        model, origin = load_model(model_dir), str(model_dir)
    check_reference(
        model.config, learner, width=run.reference.embed_dim, origin=origin,
        cached=run.step.reference_embeddings == "cached",
    )
    return model, origin


# ---------------------------------------------------------------- logs, evaluation, signals


class MetricsLog:
    """``metrics.jsonl`` and TensorBoard events of a run; a resumed run drops records after its checkpoint.

    Only process 0 writes (under ``jax.distributed`` every process computes the same metrics).
    """

    def __init__(self, run_dir: pathlib.Path, resume_step: int):
        self.active = jax.process_index() == 0
        if not self.active:
            return
        self.path = run_dir / METRICS_FILE
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.file = self.path.open("a")
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.active:
            return
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        for name, value in values.items():
            self.tb.add_scalar(name, value, step)
        self.tb.flush()

    def close(self) -> None:
        if not self.active:
            return
        self.file.close()
        self.tb.close()


def run_evaluation(learner: TwoTower, tokenizer: TextTokenizer, suite: Any, batch_size: int) -> dict[str, float]:
    """`aced.eval.evaluate` on one device (the suite is small; replicas would repeat the work)."""
    from aced.eval import evaluate

    return evaluate(_on_one_device(learner), tokenizer, suite, batch_size=batch_size)


def build_eval_suite(run: RunConfig) -> Any:
    """The built-in evaluation suite at the run's sizes, or None when the images cannot match."""
    if run.model.image_size != BUILTIN_IMAGE_SIZE:
        say(f"evaluation skipped: the suite's scenes are {BUILTIN_IMAGE_SIZE}px, model.image_size={run.model.image_size}")
        return None
    from aced.eval import build_suite

    return build_suite(
        seed=EVAL_SUITE_SEED,
        per_task=run.train.eval_per_task,
        retrieval_size=run.train.eval_retrieval_size,
        channels=run.model.channels,
    )


class StopRequest:
    """While active, SIGINT / SIGTERM ask the loop to stop after the current step (a second one stops at once)."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        say(f"{self.signal} received: saving a checkpoint after this step (again to stop at once)")

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def check_finite(metrics: dict[str, float], step: int, checkpoint: str) -> None:
    """Raise `TrainingDiverged` naming the step and the first non-finite term (losses first)."""
    names = sorted(metrics, key=lambda k: (not k.startswith("loss/"), k))
    for name in names:
        if not math.isfinite(metrics[name]):
            raise TrainingDiverged(
                f"step {step}: {name} is {metrics[name]}; training stopped. {checkpoint} Lower "
                "step.optim.learning_rate (or raise optim.warmup_steps) and rerun to resume, "
                "or start afresh with another train.out_dir"
            )


def _check_same_run(run: RunConfig, meta: dict[str, Any], run_dir: pathlib.Path) -> None:
    saved, now = meta["run_config"], to_dict(run)
    changed = [
        f"{section}.{k}: {saved[section].get(k)!r} -> {v!r}"
        for section in ("step", "model", "data")
        for k, v in _flat(now[section]).items()
        if _flat(saved[section]).get(k) != v
    ]
    if changed:
        raise ValueError(
            f"{run_dir} holds a run with other settings ({'; '.join(changed[:4])}); resume it with "
            "its own settings (only train.* and reference.* may change), or use another train.out_dir"
        )


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


# ---------------------------------------------------------------- the loop


@functools.lru_cache(maxsize=4)
def compiled_step(config: StepConfig, mesh: Mesh) -> Callable:
    """`make_train_step` once per step configuration and mesh, so that a run resumed
    (or a reference trained) in the same process reuses the compiled step."""
    return make_train_step(config, mesh)



def train(run: RunConfig) -> dict[str, Any]:
    """Train (or resume) the run `run` in ``run.train.out_dir``.

    **Arguments:**

    - `run`: the full configuration (see `aced.train.run_config`).

    **Returns:** the final metrics: the last step's training metrics,
    ``flops_cumulative``, ``eval/<metric>`` of the final evaluation, ``step``
    and ``interrupted`` (True when SIGINT / SIGTERM stopped the run after
    saving a checkpoint). Raises `TrainingDiverged` on a non-finite loss,
    `aced.train.checkpoint.CheckpointError` when a checkpoint cannot be
    written or read, `ValueError` on a configuration that cannot run.
    """
    out = pathlib.Path(run.train.out_dir)
    mesh = default_mesh()
    B = run.data.super_batch_size
    check_step_shapes(run.step, B, mesh.shape[AXIS])
    tokenizer = build_tokenizer(run)
    source = build_source(run.data)
    learner_config = run.model.two_tower(vocab_size=tokenizer.vocab_size, max_len=tokenizer.max_len)

    prepared = prepare_reference(run, learner_config)
    if run.needs_reference and prepared is None:
        return {"step": 0, "interrupted": True}
    reference = prepared[0] if prepared else None

    init_key, state_key = jax.random.split(jax.random.key(run.train.seed))
    learner = TwoTower(learner_config, key=init_key)
    teacher_width = reference.config.embed_dim if reference is not None else None
    state = replicate(init_train_state(learner, run.step, state_key, teacher_width=teacher_width), mesh)
    # The step's signature takes a reference even for IID, which never reads it
    # (`replicate` makes new buffers, so this is not the state's learner).
    frozen = replicate(reference if reference is not None else learner, mesh)

    out.mkdir(parents=True, exist_ok=True)
    start, data_state, flops_total = 0, IteratorState(), 0.0
    if checkpoint_steps(out):
        state, meta = restore_checkpoint(out, state)
        _check_same_run(run, meta, out)
        start, data_state = int(meta["step"]), IteratorState.from_dict(meta["data"])
        flops_total = float(meta["flops_cumulative"])
        say(f"resuming {out} from step {start}")
    main_process = jax.process_index() == 0
    if main_process:
        (out / "run_config.json").write_text(json.dumps(to_dict(run), indent=2) + "\n")

    cache = None
    if run.step.reference_embeddings == "cached":
        image = reference.config.image
        say(f"embedding the {len(source)} training examples with the reference once ({image.image_size}px)")
        cache = cache_reference_embeddings(
            frozen, source, reference_tokenizer(reference, run.reference.path or None, tokenizer),
            image_size=image.image_size, channels=image.channels, mesh=mesh,
        )
    batches = BatchIterator(
        source, tokenizer, batch_size=B, seed=run.data.seed, image_size=run.model.image_size,
        channels=run.model.channels, state=data_state,
    )
    suite = build_eval_suite(run)
    step_fn = compiled_step(run.step, mesh)
    manager = open_checkpoints(out, keep=run.train.keep_checkpoints)
    log = MetricsLog(out, start)

    def meta(metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "data": batches.state.to_dict(), "run_config": to_dict(run), "model": learner_config.to_dict(),
            "teacher_width": teacher_width, "flops_cumulative": flops_total, "metrics": metrics,
        }

    def evaluate_now(step: int) -> dict[str, float]:
        if suite is None:
            return {}
        scores = {f"eval/{k}": v for k, v in run_evaluation(state.learner, tokenizer, suite, run.train.eval_batch_size).items()}
        log.write(step, {"flops_cumulative": flops_total, **scores})
        return scores

    from tqdm import tqdm

    host: dict[str, float] = {}
    step, last_saved = start, start
    interrupted = False
    window_start, window_steps = time.perf_counter(), 0
    bar = tqdm(total=run.train.steps, initial=start, desc=run.step.method, unit="step",
               disable=not (run.train.progress and main_process), dynamic_ncols=True)
    try:
        with StopRequest() as stop:
            while step < run.train.steps:
                batch = super_batch(next(batches), mesh, cache)
                state, metrics = step_fn(state, batch, frozen)
                step += 1
                host = {k: float(v) for k, v in metrics.items()}
                flops_total += host.get("flops", 0.0)
                window_steps += 1
                if not all(math.isfinite(v) for v in host.values()):
                    log.write(step, {"flops_cumulative": flops_total, **host})
                    where = (f"The last good checkpoint is step {last_saved} in {out / 'checkpoints'}."
                             if last_saved else "No checkpoint was saved before.")
                    check_finite(host, step, where)
                elapsed = time.perf_counter() - window_start
                rate = B * window_steps / max(elapsed, 1e-9)
                bar.set_postfix(loss=f"{host['loss/total']:.4f}", ex_s=f"{rate:.0f}", refresh=False)
                bar.update(1)
                if step % run.train.log_every == 0 or step == run.train.steps:
                    log.write(step, {"flops_cumulative": flops_total, "examples_per_s": rate, **host})
                    window_start, window_steps = time.perf_counter(), 0
                if run.train.eval_every and step % run.train.eval_every == 0 and step != run.train.steps:
                    evaluate_now(step)
                if step % run.train.checkpoint_every == 0 or step == run.train.steps or stop.signal:
                    save_checkpoint(manager, state, meta(host))
                    last_saved = step
                if stop.signal:
                    interrupted = True
                    say(f"stopped at step {step}: checkpoint saved in {out / 'checkpoints'}; "
                        "rerun the same command to resume")
                    break
        scores = {} if interrupted else evaluate_now(step)
    finally:
        bar.close()
        log.close()
        manager.close()

    result: dict[str, Any] = {"step": step, "interrupted": interrupted, "flops_cumulative": flops_total, **host}
    if interrupted:
        return result
    result.update(scores)
    if not main_process:
        return result
    if suite is not None:
        from aced.eval import write_json

        plain = {k.removeprefix("eval/"): v for k, v in scores.items()}
        write_json(plain, out / EVAL_FILE, suite=suite,
                   metadata={"run_dir": str(out), "step": step, "flops_cumulative": flops_total,
                             "method": run.step.method})
    save_tokenizer(tokenizer, out / TOKENIZER_FILE)
    save_model(_on_one_device(state.learner), out / MODEL_DIR, extra_files=(out / TOKENIZER_FILE,))
    return result
