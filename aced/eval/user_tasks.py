"""Evaluation on your own data: zero-shot classification and image-text retrieval tasks
named in a task file, in the conventions of CLIP_benchmark.

A task file (TOML or JSON) lists tasks; paths are relative to the file::

    [[task]]
    name = "digits"
    kind = "zeroshot"                 # a labelled dataset
    source = "parquet"                # parquet | csv | imagefolder | webdataset
    path = "eval-*.parquet"
    image_column = "image"
    label_column = "label"            # int class ids in [0, K)
    class_names = "classes.txt"       # K lines
    templates = "templates.txt"       # lines with {} for the class name (default: "{}")

    [[task]]
    name = "digits_probe"
    kind = "linear_probe"             # logistic regression on frozen image embeddings
    source = "parquet"
    path = "eval-*.parquet"           # scored here
    train_path = "train-*.parquet"    # fitted here (20 % of it held out to choose C)

    [[task]]
    name = "captions"
    kind = "retrieval"                # a captioned dataset; a caption cell may hold a list
    source = "parquet"
    path = "eval-*.parquet"
    caption_column = "caption"

Scores (``<task>/<metric>``): zero-shot ``top1``, ``top5`` (when K > 5) and
``mean_per_class`` (the mean of each class's top-1 recall), with the class
embedding the normalised mean over templates (CLIP's prompt ensembling);
linear probe ``top1``, ``top5`` (K > 5) and ``mean_per_class`` of scikit-learn's
logistic regression on the L2-normalised image embeddings, its inverse
regularisation C chosen from `PROBE_CS` on a held-out 20 % of the training data
(seed 0) and the probe then refitted on all of it;
retrieval ``i2t_r1/5/10`` (an image is right when any of its captions is in
its top k) and ``t2i_r1/5/10``. Ties count against the model, as in
`aced.eval.metrics`. ``average``: the mean of every score.
"""

import dataclasses
import json
import pathlib
import tomllib
from typing import Any

import jax.numpy as jnp
import numpy as np

from aced.data.tokenizer_build import prompt_texts
from aced.eval.evaluate import embed_images, embed_texts
from aced.eval.metrics import average_prompt_embeddings

KINDS = ("zeroshot", "retrieval", "linear_probe")
PROBE_CS = tuple(10.0**k for k in range(-2, 5))  # C candidates of the linear probe
SOURCES = ("parquet", "csv", "imagefolder", "webdataset")


@dataclasses.dataclass(frozen=True)
class UserTask:
    """One task of a task file (see the module docstring); paths already resolved."""

    name: str
    kind: str
    source: str
    path: str
    image_column: str | None = None
    label_column: str = "label"
    caption_column: str = "caption"
    class_names: str | None = None
    templates: str | None = None
    train_path: str | None = None


def load_tasks(path: str | pathlib.Path) -> list[UserTask]:
    """The tasks of a TOML or JSON task file, each checked, with paths resolved."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist")
    text = path.read_text()
    raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    entries = raw.get("task", raw.get("tasks")) if isinstance(raw, dict) else raw
    if not entries:
        raise ValueError(f"{path} names no tasks; add [[task]] tables (see aced.eval.user_tasks)")
    fields = {f.name for f in dataclasses.fields(UserTask)}
    tasks = []
    for i, entry in enumerate(entries):
        where = f"{path}, task {entry.get('name', i)!r}"
        unknown = set(entry) - fields
        if unknown or not {"name", "kind", "source", "path"} <= set(entry):
            raise ValueError(f"{where}: needs name, kind, source, path; unknown keys {unknown}")
        if entry["kind"] not in KINDS or entry["source"] not in SOURCES:
            raise ValueError(f"{where}: kind must be one of {KINDS}, source one of {SOURCES}")
        if entry["kind"] == "zeroshot" and not entry.get("class_names"):
            raise ValueError(f"{where}: a zeroshot task needs class_names (a file, a name a line)")
        if entry["kind"] == "linear_probe" and not entry.get("train_path"):
            raise ValueError(f"{where}: a linear_probe task needs train_path (the data to fit on)")
        resolved = {
            k: str(path.parent / v)
            if k in ("path", "class_names", "templates", "train_path")
            else v
            for k, v in entry.items()
        }
        tasks.append(UserTask(**resolved))
    return tasks


def read_lines(path: str, what: str, *, allow_empty: bool = False) -> list[str]:
    """The non-blank lines of a text file (class names, templates, extra texts), stripped."""
    file = pathlib.Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{what} file {file} does not exist")
    lines = [line.strip() for line in file.read_text().splitlines() if line.strip()]
    if not lines and not allow_empty:
        raise ValueError(f"{what} file {file} is empty")
    return lines


def zero_shot_scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """top-1, top-5 (K > 5) and mean per-class accuracy of (n, K) logits; ties count
    against the model (a class scoring at least as high as the label outranks it)."""
    right = logits[np.arange(len(labels)), labels]
    rank = (logits >= right[:, None]).sum(axis=1) - 1  # other classes at least as high
    out = {"top1": float(np.mean(rank < 1))}
    if logits.shape[1] > 5:
        out["top5"] = float(np.mean(rank < 5))
    present = np.unique(labels)
    out["mean_per_class"] = float(np.mean([np.mean(rank[labels == c] < 1) for c in present]))
    return out


def retrieval_scores(similarity: np.ndarray, text_image: np.ndarray) -> dict[str, float]:
    """Recall@1/5/10 both ways of an (images, texts) similarity; text j belongs to image
    ``text_image[j]``, and an image may have several texts. Ties count against the model."""
    n_img, n_txt = similarity.shape
    own = text_image[None, :] == np.arange(n_img)[:, None]  # (images, texts)
    best_own = np.where(own, similarity, -np.inf).max(axis=1)  # each image's best caption
    i2t_rank = (~own & (similarity >= best_own[:, None])).sum(axis=1)
    right = similarity[text_image, np.arange(n_txt)]  # each text's own image
    t2i_rank = ((similarity >= right[None, :]) & ~own).sum(axis=0)
    out = {}
    for k in (1, 5, 10):
        out[f"i2t_r{k}"] = float(np.mean(i2t_rank < k))
    for k in (1, 5, 10):
        out[f"t2i_r{k}"] = float(np.mean(t2i_rank < k))
    return out


def _labels(data, task: UserTask, n_classes: int | None = None) -> np.ndarray:
    labels = np.asarray(list(data.dataset[data.caption_column]))
    top = n_classes if n_classes is not None else np.inf
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= top:
        where = f"[0, {n_classes}) (one per line of {task.class_names})" if n_classes else ">= 0"
        raise ValueError(
            f"task {task.name!r}: labels must be int class ids in {where}; "
            f"found {labels.min()}..{labels.max()}"
        )
    return labels.astype(np.int64)


def linear_probe(
    train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, n_classes: int
) -> np.ndarray:
    """(n_test, n_classes) decision values of a logistic regression fitted on `train`, C
    chosen from `PROBE_CS` on a held-out 20 % (seed 0); classes never seen score -inf."""
    from sklearn.linear_model import LogisticRegression

    order = np.random.default_rng(0).permutation(len(train))
    held = order[: max(1, len(train) // 5)]
    fit = order[len(held) :] if len(order) > len(held) else order
    if len(np.unique(train_labels[fit])) < 2:
        raise ValueError(
            f"the linear probe's training data ({len(train)} examples) leaves fewer than two "
            "classes to fit on after holding out 20 %; use more training examples"
        )

    def fitted(c, rows):
        return LogisticRegression(C=c, max_iter=2000).fit(train[rows], train_labels[rows])

    best = max(PROBE_CS, key=lambda c: (fitted(c, fit).score(train[held], train_labels[held]), -c))
    probe = fitted(best, np.arange(len(train)))
    out = np.full((len(test), n_classes), -np.inf)
    values = probe.decision_function(test)
    if values.ndim == 1:  # two classes seen: one column, for the second
        values = np.stack([-values, values], axis=1)
    out[:, probe.classes_] = values
    return out


def _dataset(task: UserTask, text_column: str):
    from aced.data import hf

    load = {
        "parquet": hf.load_parquet,
        "csv": hf.load_csv,
        "imagefolder": hf.load_imagefolder,
        "webdataset": hf.load_webdataset,
    }[task.source]
    if task.source == "webdataset":
        return load(task.path, caption_key=text_column)
    columns = {"caption_column": text_column}
    if task.image_column and task.source != "imagefolder":
        columns["image_column"] = task.image_column
    return load(task.path, **columns)


def _images(model: Any, data, batch_size: int) -> np.ndarray:
    config = model.config.image
    loaded = data.load(np.arange(len(data)), config.image_size, config.channels)
    if not loaded.ok.all():
        bad = int(np.flatnonzero(~loaded.ok)[0])
        raise ValueError(f"example {bad} of {data.dataset}: {loaded.errors[bad]}")
    return embed_images(model, loaded.images, config.channels, batch_size)


def run_task(model: Any, tokenizer, task: UserTask, *, batch_size: int = 256) -> dict:
    """The scores of one task (see the module docstring)."""
    if task.kind == "zeroshot":
        data = _dataset(task, task.label_column)
        names = read_lines(task.class_names, f"task {task.name!r}: class_names")
        templates = (
            read_lines(task.templates, f"task {task.name!r}: templates")
            if task.templates
            else ["{}"]
        )
        try:
            prompts = prompt_texts(names, templates)
        except ValueError as error:
            raise ValueError(f"task {task.name!r}: {error}") from error
        labels = _labels(data, task, len(names))
        zimg = _images(model, data, batch_size)
        set_ids = jnp.repeat(jnp.arange(len(names), dtype=jnp.int32), len(templates))
        zt = jnp.asarray(embed_texts(model, tokenizer(prompts), batch_size))
        classes = np.asarray(average_prompt_embeddings(zt, set_ids, len(names)))
        return zero_shot_scores(zimg @ classes.T, labels)
    if task.kind == "linear_probe":
        train = _dataset(dataclasses.replace(task, path=task.train_path), task.label_column)
        test = _dataset(task, task.label_column)
        train_labels, test_labels = _labels(train, task), _labels(test, task)
        n_classes = int(max(train_labels.max(), test_labels.max())) + 1
        features = [_images(model, data, batch_size) for data in (train, test)]
        return zero_shot_scores(
            linear_probe(features[0], train_labels, features[1], n_classes), test_labels
        )
    data = _dataset(task, task.caption_column)
    zimg = _images(model, data, batch_size)
    texts, owner = [], []
    for i, cell in enumerate(data.dataset[data.caption_column]):
        cell = [cell] if isinstance(cell, str) else list(cell)
        texts += [str(c) for c in cell]
        owner += [i] * len(cell)
    ztxt = embed_texts(model, tokenizer(texts), batch_size)
    return retrieval_scores(zimg @ ztxt.T, np.asarray(owner))


def run_tasks(model: Any, tokenizer, tasks: list[UserTask], *, batch_size: int = 256) -> dict:
    """``{"<task>/<metric>": score, ..., "average": mean of them all}``."""
    scores = {}
    for task in tasks:
        for metric, value in run_task(model, tokenizer, task, batch_size=batch_size).items():
            scores[f"{task.name}/{metric}"] = value
    scores["average"] = float(np.mean(list(scores.values())))
    return scores
