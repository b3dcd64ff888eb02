"""Run the suite on a model: per-task scores, the suite average, a table, JSON.

The model is anything with ``embed_images(images: f32[n H W C]) -> f32[n D]``
and ``embed_texts(tokens: i32[n L]) -> f32[n D]`` returning L2-normalised rows
(`aced.models.TwoTower` and stand-ins alike). Both are called through
`equinox.filter_jit` on batches of exactly `batch_size` rows (the last batch
padded), so each compiles once.

Scores (keys of the dict `evaluate` returns):

- ``zeroshot/<task>``: accuracy of each task of `aced.eval.tasks.TASK_NAMES`.
- ``retrieval/i2t_r1``, ``i2t_r5``, ``t2i_r1``, ``t2i_r5``: recall@1 and @5,
  image-to-text and text-to-image, on the suite's retrieval pairs.
- ``average``: the headline score, the unweighted mean of the eight
  zero-shot accuracies and the four recalls (twelve numbers).
"""

import json
import os
import pathlib
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from aced.data.images import to_model_images
from aced.eval.metrics import average_prompt_embeddings, retrieval_recalls, zero_shot_accuracy
from aced.eval.tasks import EvalSuite


@eqx.filter_jit
def _embed_images(model: Any, images: jnp.ndarray) -> jnp.ndarray:
    return model.embed_images(images)


@eqx.filter_jit
def _embed_texts(model: Any, tokens: jnp.ndarray) -> jnp.ndarray:
    return model.embed_texts(tokens)


def _batched(
    fn: Callable, model: Any, rows: np.ndarray, batch_size: int, prepare: Callable
) -> np.ndarray:
    out = []
    for start in range(0, rows.shape[0], batch_size):
        chunk = prepare(rows[start : start + batch_size])
        real = chunk.shape[0]
        if real < batch_size:  # pad to one shape so that fn compiles once
            chunk = np.concatenate(
                [chunk, np.zeros((batch_size - real, *chunk.shape[1:]), chunk.dtype)]
            )
        out.append(np.asarray(fn(model, jnp.asarray(chunk)))[:real])
    return np.concatenate(out)


def embed_images(model: Any, images: np.ndarray, channels: int, batch_size: int) -> np.ndarray:
    """Embeddings (n, D) of uint8 scenes (n, H, W), preprocessed per batch."""
    return _batched(
        _embed_images, model, images, batch_size, lambda x: to_model_images(x, channels)
    )


def embed_texts(model: Any, tokens: np.ndarray, batch_size: int) -> np.ndarray:
    """Embeddings (n, D) of int32 token rows (n, L)."""
    return _batched(_embed_texts, model, tokens, batch_size, lambda x: x.astype(np.int32))


def evaluate(
    model: Any,
    tokenizer: Callable[[list[str]], np.ndarray],
    suite: EvalSuite,
    *,
    batch_size: int = 256,
) -> dict[str, float]:
    """Score a model on every zero-shot task and on retrieval.

    **Arguments:**

    - `model`: has ``embed_images`` and ``embed_texts`` (see module docstring).
    - `tokenizer`: texts -> int32 (n, L) with the model's L, e.g.
      `aced.data.builtin_tokenizer()`.
    - `suite`: from `aced.eval.build_suite`.
    - `batch_size`: rows per embedding call.

    **Returns:** ``{"zeroshot/<task>": acc, "retrieval/<metric>": recall,
    "average": mean of all of them}``, floats in [0, 1].
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be positive")
    texts = [t for templates in suite.prompt_sets for t in templates]
    set_ids = np.repeat(np.arange(len(suite.prompt_sets)), [len(s) for s in suite.prompt_sets])
    template_embeddings = embed_texts(model, tokenizer(texts), batch_size)
    class_embeddings = average_prompt_embeddings(
        jnp.asarray(template_embeddings),
        jnp.asarray(set_ids, dtype=jnp.int32),
        len(suite.prompt_sets),
    )
    results: dict[str, float] = {}
    for task in suite.tasks:
        image_embeddings = embed_images(model, task.images, suite.channels, batch_size)
        accuracy = zero_shot_accuracy(
            jnp.asarray(image_embeddings),
            class_embeddings,
            jnp.asarray(task.candidates, dtype=jnp.int32),
            jnp.asarray(task.labels, dtype=jnp.int32),
        )
        results[f"zeroshot/{task.name}"] = float(accuracy)
    zimg = embed_images(model, suite.retrieval.images, suite.channels, batch_size)
    ztxt = embed_texts(model, tokenizer(list(suite.retrieval.captions)), batch_size)
    similarity = jnp.asarray(zimg) @ jnp.asarray(ztxt).T  # (n, D) . (D, n) -> (n, n)
    recalls = {k: retrieval_recalls(similarity, k) for k in (1, 5)}
    for direction, which in (("i2t", 0), ("t2i", 1)):
        for k in (1, 5):
            results[f"retrieval/{direction}_r{k}"] = float(recalls[k][which])
    results["average"] = float(np.mean(list(results.values())))
    return results


def format_table(results: dict[str, float], suite: EvalSuite | None = None) -> str:
    """A plain-text table of the scores (in %), with chance levels when `suite` is given.

    **Arguments:**

    - `results`: from `evaluate`; `suite`: the suite it was run on, or None.

    **Returns:** the table, one metric per line, ``average`` last.
    """
    chance = suite.chance_levels() if suite is not None else {}
    names = [k for k in results if k != "average"] + (["average"] if "average" in results else [])
    width = max(len(k) for k in names + ["metric"])
    lines = [f"{'metric':<{width}}  {'score':>7}" + (f"  {'chance':>7}" if chance else "")]
    lines.append("-" * len(lines[0]))
    for name in names:
        if name == "average":
            lines.append("-" * len(lines[0]))
        row = f"{name:<{width}}  {100 * results[name]:6.1f}%"
        if chance:
            row += f"  {100 * chance[name]:6.1f}%" if name in chance else f"  {'':>7}"
        lines.append(row)
    return "\n".join(lines)


def write_json(
    results: dict[str, float],
    path: str | os.PathLike,
    *,
    suite: EvalSuite | None = None,
    metadata: dict[str, Any] | None = None,
) -> pathlib.Path:
    """Write ``{"scores": ..., "chance": ..., "metadata": ...}`` as JSON.

    **Arguments:**

    - `results`: from `evaluate`; `path`: output file (parents created).
    - `suite`: adds chance levels and the suite's construction (seed, sizes).
    - `metadata`: anything JSON-serialisable to keep beside (checkpoint, step).

    **Returns:** the path written.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"scores": results}
    if suite is not None:
        record["chance"] = suite.chance_levels()
        record["suite"] = {
            "seed": suite.seed,
            "per_task": {t.name: int(t.labels.shape[0]) for t in suite.tasks},
            "retrieval_size": len(suite.retrieval.captions),
            "grid": [suite.config.rows, suite.config.cols],
            "cell": suite.config.cell,
        }
    record["metadata"] = metadata or {}
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    return path
