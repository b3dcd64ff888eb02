"""The training loop: ``train(run_config)`` runs one `RunConfig` in ``train.out_dir``.

- builds the tokenizer, the training examples and a resumable super-batch
  iterator (`aced.train.inputs`); the learner; the reference
  (`aced.train.reference`: loaded from ``reference.path``, or trained first
  on the curated split under ``<out_dir>/reference`` when the method needs
  one and none is given); optionally the reference's embeddings of every
  example (``step.reference_embeddings="cached"``), computed with the
  reference's own image size, channels and tokenizer;
- loads and shards the next super-batch on one input thread while the
  current step computes (in order, so the batches are those of a plain
  loop; a checkpoint records the iterator's state after the batch its step
  trained on);
- runs the jitted step with a tqdm bar (loss, examples/s, ETA), writes
  ``metrics.jsonl`` and TensorBoard events (`aced.train.logs`), every record
  carrying the cumulative training FLOPs (``flops_cumulative``: every step's
  ``flops``, plus the one-off cache pass when the run makes the cache) and
  the reference's own training FLOPs (``reference_flops``), and on log
  steps the selection diagnostics (`aced.train.diagnostics`); evaluates
  every ``train.eval_every`` steps and at the end (``eval.json``,
  `aced.train.evaluation`);
- saves a checkpoint every ``train.checkpoint_every`` steps and at the end,
  resumes from the latest one found in ``out_dir``, saves and returns on
  SIGINT / SIGTERM, and stops on a non-finite loss (`aced.train.logs.TrainingDiverged`);
- exports the final learner to ``<out_dir>/model`` (`save_model` files plus
  ``tokenizer.json``), which `aced.train.learners.load_learner` reads back.
"""

import functools
import json
import math
import pathlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
from jax.sharding import Mesh

from aced.data import BatchIterator, IteratorState, save_tokenizer
from aced.eval import write_json
from aced.models import TwoTower
from aced.train.checkpoint import (
    checkpoint_steps,
    open_checkpoints,
    restore_checkpoint,
    save_checkpoint,
    save_model,
)
from aced.train.config import RunConfig, StepConfig, migrate, to_dict
from aced.train.diagnostics import make_support_fn, selection_diagnostics
from aced.train.embedding_cache import reference_cache
from aced.train.evaluation import EVAL_FILE, build_evaluation
from aced.train.inputs import build_source, build_tokenizer, super_batch
from aced.train.learners import MODEL_DIR, RUN_CONFIG_FILE, TOKENIZER_FILE
from aced.train.logs import MetricsLog, StopRequest, check_finite, say
from aced.train.processes import any_process, data_states, restored_data_state, sync
from aced.train.reference import prepare_reference, reference_tokenizer, reference_training_flops
from aced.train.sharding import AXIS, default_mesh, on_one_device, replicate
from aced.train.state import init_train_state
from aced.train.step import make_train_step


def _check_same_run(run: RunConfig, meta: dict[str, Any], run_dir: pathlib.Path) -> None:
    # A run directory written before field renames compares in today's layout.
    saved, now = migrate(meta["run_config"]), to_dict(run)
    changed = [
        f"{section}.{k}: {saved[section].get(k)!r} -> {v!r}"
        for section in ("step", "model", "data")
        for k, v in _flat(now[section]).items()
        if _flat(saved[section]).get(k) != v
    ]
    if changed:
        raise ValueError(
            f"{run_dir} holds a run with other settings ({'; '.join(changed[:4])}); resume it "
            "with its own settings (only train.* and reference.* may change), or use another "
            "train.out_dir"
        )


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@functools.lru_cache(maxsize=4)
def compiled_step(config: StepConfig, mesh: Mesh) -> Callable:
    """`make_train_step` once per step configuration and mesh, so that a run resumed
    (or a reference trained) in the same process reuses the compiled step."""
    return make_train_step(config, mesh, with_selection=True)


def train(run: RunConfig) -> dict[str, Any]:
    """Train (or resume) the run `run` in ``run.train.out_dir``.

    **Arguments:**

    - `run`: the full configuration (see `aced.train.config`).

    **Returns:** the final metrics: the last step's training metrics,
    ``flops_cumulative`` (the run's own compute: its steps and its cache pass),
    ``reference_flops`` (the reference's training, `reference_training_flops`;
    0 without a reference, and 0 with ``reference_flops_known`` False when
    no aced run recorded it), ``reference_cache_flops`` (the cache pass, part
    of ``flops_cumulative``), ``eval/<metric>`` of the final evaluation, ``step``
    and ``interrupted`` (True when SIGINT / SIGTERM stopped the run after
    saving a checkpoint). Raises `aced.train.logs.TrainingDiverged` on a non-finite loss,
    `aced.train.checkpoint.CheckpointError` when a checkpoint cannot be
    written or read, `ValueError` on a configuration that cannot run.
    """
    out = pathlib.Path(run.train.out_dir)
    mesh = default_mesh()
    B = run.data.super_batch_size
    run.step.check_shapes(B, mesh.shape[AXIS])
    tokenizer = build_tokenizer(run)
    source = build_source(run.data)
    learner_config = run.model.two_tower(vocab_size=tokenizer.vocab_size, max_len=tokenizer.max_len)

    prepared = prepare_reference(run, learner_config, train=train)
    if run.needs_reference and prepared is None:
        return {"step": 0, "interrupted": True}
    reference = prepared[0] if prepared else None
    reference_flops, reference_known = (
        reference_training_flops(prepared[1]) if prepared else (0.0, True)
    )

    init_key, state_key = jax.random.split(jax.random.key(run.train.seed))
    learner = TwoTower(learner_config, key=init_key)
    teacher_width = reference.config.embed_dim if reference is not None else None
    state = init_train_state(learner, run.step, state_key, teacher_width=teacher_width)
    state = replicate(state, mesh)
    # The step's signature takes a reference even for IID, which never reads it
    # (`replicate` makes new buffers, so this is not the state's learner).
    frozen = replicate(reference if reference is not None else learner, mesh)

    out.mkdir(parents=True, exist_ok=True)
    start, data_state, flops_total, restored = 0, IteratorState(), 0.0, {}
    if checkpoint_steps(out):
        state, restored = restore_checkpoint(out, state)
        _check_same_run(run, restored, out)
        start, data_state = int(restored["step"]), restored_data_state(restored, out)
        flops_total = float(restored["flops_cumulative"])
        say(f"resuming {out} from step {start}")
    main_process = jax.process_index() == 0
    if main_process:
        (out / RUN_CONFIG_FILE).write_text(json.dumps(to_dict(run), indent=2) + "\n")

    cache, cache_flops = None, 0.0
    if run.step.reference_embeddings == "cached":
        ref_tokenizer = reference_tokenizer(reference, run.reference.path or None, tokenizer)
        cache, cache_flops = reference_cache(
            reference, frozen, source, ref_tokenizer, mesh=mesh, directory=run.reference.embeddings
        )
        # Charged once: a resumed run's restored total holds it (unless it was
        # written before the cache pass was counted).
        if "reference_cache_flops" not in restored:
            flops_total += cache_flops
    batches = BatchIterator(
        source,
        tokenizer,
        batch_size=B,
        seed=run.data.seed,
        image_size=run.model.image_size,
        channels=run.model.channels,
        state=data_state,
    )
    evaluation = build_evaluation(run)
    step_fn = compiled_step(run.step, mesh)
    supports_fn = make_support_fn(run.step, mesh)
    manager = open_checkpoints(out, keep=run.train.keep_checkpoints)
    log = MetricsLog(out, start)

    def meta(metrics: dict[str, float], data_state: IteratorState) -> dict[str, Any]:
        every = data_states(data_state)  # a collective: every process saves
        return {
            "data": every[0],
            "data_per_process": every,
            "run_config": to_dict(run),
            "model": learner_config.to_dict(),
            "teacher_width": teacher_width,
            **costs(),
            "metrics": metrics,
        }

    def totals() -> dict[str, float]:  # both readings: reference amortised / included
        return {"flops_cumulative": flops_total, "reference_flops": reference_flops}

    def costs() -> dict[str, Any]:
        return {
            **totals(),
            "reference_flops_known": reference_known,
            "reference_cache_flops": cache_flops,
        }

    def evaluate_now(step: int) -> dict[str, float]:
        if evaluation is None:
            return {}
        scores = evaluation(state.learner, tokenizer, run.train.eval_batch_size)
        scores = {f"eval/{k}": v for k, v in scores.items()}
        log.write(step, {**totals(), **scores})
        return scores

    from tqdm import tqdm

    host: dict[str, float] = {}
    step, last_saved = start, start
    interrupted = False
    window_start, window_steps = time.perf_counter(), 0
    bar = tqdm(
        total=run.train.steps,
        initial=start,
        desc=run.step.method,
        unit="step",
        disable=not (run.train.progress and main_process),
        dynamic_ncols=True,
    )

    def load() -> tuple[dict, Any, IteratorState]:
        """The next super-batch, and the iterator's state after it (what a checkpoint saves)."""
        rows = next(batches)
        return rows, super_batch(rows, mesh, cache), batches.state

    # One input thread loads (and shards) the next super-batch while a step computes,
    # in order: the batches, and so the run, are those of loading them one by one.
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aced-input")
    try:
        with StopRequest() as stop:
            upcoming = loader.submit(load) if step < run.train.steps else None
            while step < run.train.steps:
                rows, batch, data_state = upcoming.result()
                if step + 1 < run.train.steps:
                    upcoming = loader.submit(load)
                state, metrics, curated = step_fn(state, batch, frozen)
                step += 1
                host = {k: float(v) for k, v in jax.device_get(metrics).items()}
                flops_total += host.get("flops", 0.0)
                window_steps += 1
                if not all(math.isfinite(v) for v in host.values()):
                    log.write(step, {**totals(), **host})
                    where = (
                        f"The last good checkpoint is step {last_saved} in {out / 'checkpoints'}."
                        if last_saved
                        else "No checkpoint was saved before."
                    )
                    check_finite(host, step, where)
                elapsed = time.perf_counter() - window_start
                rate = B * window_steps / max(elapsed, 1e-9)
                bar.set_postfix(loss=f"{host['loss/total']:.4f}", ex_s=f"{rate:.0f}", refresh=False)
                bar.update(1)
                if step % run.train.log_every == 0 or step == run.train.steps:
                    diagnostics = selection_diagnostics(supports_fn, curated, rows.get("quality"))
                    log.write(step, {**totals(), "examples_per_s": rate, **host, **diagnostics})
                    window_start, window_steps = time.perf_counter(), 0
                every = run.train.eval_every
                if every and step % every == 0 and step != run.train.steps:
                    evaluate_now(step)
                stopping = any_process(stop.signal is not None)  # all processes stop together
                if step % run.train.checkpoint_every == 0 or step == run.train.steps or stopping:
                    save_checkpoint(manager, state, meta(host, data_state))
                    last_saved = step
                if stopping:
                    interrupted = True
                    say(
                        f"stopped at step {step}: checkpoint saved in {out / 'checkpoints'}; "
                        "rerun the same command to resume"
                    )
                    break
        scores = {} if interrupted else evaluate_now(step)
    finally:
        loader.shutdown(cancel_futures=True)
        bar.close()
        log.close()
        manager.close()

    result: dict[str, Any] = {"step": step, "interrupted": interrupted, **costs(), **host}
    if interrupted:
        return result
    result.update(scores)
    if main_process:  # the run's files; the others wait for them at the barrier below
        if evaluation is not None:
            plain = {k.removeprefix("eval/"): v for k, v in scores.items()}
            metadata = {"run_dir": str(out), "step": step, **costs(), "method": run.step.method}
            write_json(plain, out / EVAL_FILE, suite=evaluation.suite, metadata=metadata)
        save_tokenizer(tokenizer, out / TOKENIZER_FILE)
        model_files = on_one_device(state.learner)
        save_model(model_files, out / MODEL_DIR, extra_files=(out / TOKENIZER_FILE,))
    sync(f"aced:train:{out}:done")  # every process returns once the model files are written
    return result
