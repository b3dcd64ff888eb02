"""Evaluation: zero-shot classification and retrieval on held-out scenes.

`build_suite` makes the tasks from the Fashion-MNIST test images; `evaluate`
scores a model on them; `format_table` and `write_json` report the scores.
See ``docs/eval.md``.
"""

from aced.eval.evaluate import embed_images, embed_texts, evaluate, format_table, write_json
from aced.eval.metrics import average_prompt_embeddings, retrieval_recalls, zero_shot_accuracy
from aced.eval.task_builders import TASK_NAMES
from aced.eval.tasks import RETRIEVAL_METRICS, EvalSuite, RetrievalSet, ZeroShotTask, build_suite

__all__ = [
    "EvalSuite",
    "RETRIEVAL_METRICS",
    "RetrievalSet",
    "TASK_NAMES",
    "ZeroShotTask",
    "average_prompt_embeddings",
    "build_suite",
    "embed_images",
    "embed_texts",
    "evaluate",
    "format_table",
    "retrieval_recalls",
    "write_json",
    "zero_shot_accuracy",
]
