"""A run's evaluation: the one built-in suite every run is scored on (or the tasks of
``train.eval_tasks``), and `aced.eval.evaluate` of a (replicated) learner on one device."""

import dataclasses

from aced.data import TextTokenizer
from aced.eval import EvalSuite, build_suite, evaluate
from aced.models import TwoTower
from aced.train.config import BUILTIN_IMAGE_SIZE, RunConfig
from aced.train.logs import say
from aced.train.sharding import on_one_device

EVAL_FILE = "eval.json"
EVAL_SUITE_SEED = 0  # one fixed suite, so that every run is scored on the same images


def run_evaluation(
    learner: TwoTower, tokenizer: TextTokenizer, suite: EvalSuite, batch_size: int
) -> dict[str, float]:
    """`aced.eval.evaluate` on one device (the suite is small; replicas would repeat the work)."""
    return evaluate(on_one_device(learner), tokenizer, suite, batch_size=batch_size)


def build_eval_suite(run: RunConfig) -> EvalSuite | None:
    """The built-in evaluation suite at the run's sizes, or None when the images cannot match."""
    if run.model.image_size != BUILTIN_IMAGE_SIZE:
        say(
            f"evaluation skipped: the suite's scenes are {BUILTIN_IMAGE_SIZE}px, "
            f"model.image_size={run.model.image_size}"
        )
        return None
    return build_suite(
        seed=EVAL_SUITE_SEED,
        per_task=run.train.eval_per_task,
        retrieval_size=run.train.eval_retrieval_size,
        channels=run.model.channels,
    )


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What a run is scored on: the built-in `suite`, or the user `tasks` of ``train.eval_tasks``
    (`aced.eval.user_tasks`); exactly one of them is set."""

    suite: EvalSuite | None = None
    tasks: tuple = ()

    def __call__(
        self, learner: TwoTower, tokenizer: TextTokenizer, batch_size: int
    ) -> dict[str, float]:
        if self.suite is not None:
            return run_evaluation(learner, tokenizer, self.suite, batch_size)
        from aced.eval.user_tasks import run_tasks

        return run_tasks(on_one_device(learner), tokenizer, list(self.tasks), batch_size=batch_size)


def build_evaluation(run: RunConfig) -> Evaluation | None:
    """``train.eval_tasks``' tasks when given, else the built-in suite (None when it cannot
    match the run's images)."""
    if run.train.eval_tasks:
        from aced.eval.user_tasks import load_tasks

        return Evaluation(tasks=tuple(load_tasks(run.train.eval_tasks)))
    suite = build_eval_suite(run)
    return None if suite is None else Evaluation(suite=suite)
