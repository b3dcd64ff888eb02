"""What a run reports: progress lines, ``metrics.jsonl`` and TensorBoard
events, the stop request of SIGINT / SIGTERM, and the non-finite check."""

import json
import math
import pathlib
import signal
import sys
import threading
from typing import Any

import jax

METRICS_FILE = "metrics.jsonl"


class TrainingDiverged(FloatingPointError):
    """A loss term or training statistic became NaN or infinite."""


def say(message: str) -> None:
    """A progress line on stderr (stdout is left to results)."""
    print(f"aced: {message}", file=sys.stderr, flush=True)


def summary_writer_class() -> type:
    """tensorboardX's ``SummaryWriter``, imported without torch where torch is not loaded yet.

    tensorboardX imports torch whenever it is installed, only so that it can
    accept torch tensors; aced logs Python floats, and that import alone takes
    over a second of every run's start (1.3 of tensorboardX's 1.5 s, measured
    with ``python -X importtime -c "import tensorboardX"``). ``sys.modules``
    maps ``torch`` to None for the duration of the import, which Python's
    import system turns into the ImportError tensorboardX falls back on.
    """
    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class MetricsLog:
    """``metrics.jsonl`` and TensorBoard events of a run; a resumed run drops
    records after its checkpoint.

    Only process 0 writes (under ``jax.distributed`` every process computes the same metrics).
    """

    def __init__(self, run_dir: pathlib.Path, resume_step: int):
        self.active = jax.process_index() == 0
        if not self.active:
            return
        self.path = run_dir / METRICS_FILE
        if self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.file = self.path.open("a")
        self.tb = summary_writer_class()(
            str(run_dir / "tb"), purge_step=resume_step + 1 if resume_step else None
        )

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


class StopRequest:
    """While active, SIGINT / SIGTERM ask the loop to stop after the current
    step (a second one stops at once)."""

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
            cause = (
                " (the learnability scores of the super-batch: the learner's or the "
                "reference's embeddings are not finite; check the reference, or its "
                "cached embeddings, if the losses are finite)"
                if name.startswith("score/")
                else ""
            )
            raise TrainingDiverged(
                f"step {step}: {name} is {metrics[name]}{cause}; training stopped. {checkpoint} "
                "Lower step.optim.learning_rate (or raise optim.warmup_steps) and rerun to "
                "resume, or start afresh with another train.out_dir"
            )
