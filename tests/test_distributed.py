"""``aced train`` across processes: jax.distributed on 127.0.0.1 with gloo CPU collectives.

2 processes x 2 CPU devices train the smoke preset (micro towers, its reference
trained first by the same processes) as 1 process x 4 devices does, step by
step; a SIGKILL of one process in the middle of a save stops the other at once
with a message, and both started again resume to the uninterrupted run's
parameters, bit for bit. One checkpoint directory and one set of logs are
written.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from test_loop import ACED, learner_leaves, micro_overrides, micro_run
from xla_flags import xla_flags

from aced import cli
from aced.train.checkpoint import checkpoint_steps
from aced.train.checkpoint.layout import PAUSE_ENV
from aced.train.loop import train

STEPS = 6  # checkpoints at 2, 4, 6
# Two devices per process: enough that each process splits its rows of the batch
# across local devices as well; every gloo collective spans all the run's devices, so
# fewer of them make each launch cheaper.
DEVICES = 4  # in all, split among the processes
# Not bit for bit: across process counts the gradient all-reduce sums in another order
# (gloo's ring against XLA's in-process sum), so results differ in their last bits. The
# logged metrics stay within 1e-5 relative (measured: 1e-7). Parameters are compared
# absolutely: Adam divides each gradient by its own running scale, so in the few
# parameters whose gradients nearly cancel (biases that move by ~1e-5) rounding noise
# sets the sign of the update; 1e-3 is a third of one step's largest move (lr 3e-3).
RTOL, ATOL, PARAMS_ATOL = 1e-5, 1e-5, 1e-3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(out, processes: int, process_id: int, port: int) -> list[str]:
    distributed = [
        "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes),
        "--process-id", str(process_id), "--distributed-heartbeat", "10",
    ]  # fmt: skip
    return [
        sys.executable, "-m", "aced", "train", "--preset", "smoke",
        *micro_overrides(out, STEPS, *ACED), *(distributed if processes > 1 else []),
    ]  # fmt: skip


def launch(
    out, *, processes: int = 2, pause: dict[int, str] | None = None
) -> list[subprocess.Popen]:
    """`aced train` in `processes` processes of `DEVICES` / `processes` devices each."""
    port, env = free_port(), {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env |= {"XLA_FLAGS": xla_flags(DEVICES // processes), "JAX_PLATFORMS": "cpu"}
    out.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            command(out, processes, i, port),
            env=env | ({PAUSE_ENV: pause[i]} if pause and i in pause else {}),
            stdout=open(out.parent / f"{out.name}-{i}.log", "a"),
            stderr=subprocess.STDOUT,
        )
        for i in range(processes)
    ]


def finish(procs, out, timeout=300) -> None:
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    logs = [(out.parent / f"{out.name}-{i}.log").read_text()[-3000:] for i in range(len(procs))]
    assert codes == [0] * len(procs), "\n".join(logs)


def records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "examples_per_s"} for line in lines]


def assert_same_run(got, want) -> None:
    pairs = list(zip(learner_leaves(got), learner_leaves(want), strict=True))
    for x, y in pairs:
        np.testing.assert_allclose(x, y, rtol=0, atol=PARAMS_ATOL)
    a, b = records(got), records(want)
    assert [r.keys() for r in a] == [r.keys() for r in b]
    for x, y in zip(a, b):
        assert x == pytest.approx(y, rel=RTOL, abs=ATOL)
    worst = max(abs(x[k] - y[k]) / max(abs(y[k]), 1e-30) for x, y in zip(a, b) for k in y)
    print(  # shown with pytest -s; quoted in docs/distributed.md
        f"2 processes vs 1: parameters differ by at most "
        f"{max(float(np.abs(x - y).max()) for x, y in pairs):.1e}, logged metrics by "
        f"{worst:.1e} relative"
    )


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    finish(launch(out, processes=1), out)
    return out


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("two") / "run"
    finish(launch(out), out)
    return out


@pytest.mark.slow
def test_two_processes_train_as_one(one_process, two_processes):
    """Every logged step (the reference's and the learner's) and the final parameters."""
    assert_same_run(two_processes, one_process)
    assert_same_run(two_processes / "reference", one_process / "reference")


@pytest.mark.slow
def test_a_sigkill_then_a_resume_of_both_is_bitwise_the_uninterrupted_run(
    one_process, two_processes, tmp_path
):
    """Process 1 is killed inside the save of step 4; process 0 stops at once; both
    restart and run steps 5-6, to the uninterrupted two-process run's parameters.

    The run starts from the uninterrupted run's finished reference (its training by
    two processes is `test_two_processes_train_as_one`'s): a reference directory that
    holds a model is loaded, not trained again, so this test trains the learner alone."""
    out, paused = tmp_path / "two", tmp_path / "paused"
    shutil.copytree(two_processes / "reference", out / "reference")
    procs = launch(out, pause={1: f"4:{paused}"})  # process 1 waits inside the save of step 4
    try:
        deadline = time.monotonic() + 300
        while not paused.exists():
            assert all(p.poll() is None for p in procs), (tmp_path / "two-0.log").read_text()
            assert time.monotonic() < deadline, "the save of step 4 did not start in time"
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGKILL)
        start = time.monotonic()
        assert procs[0].wait(timeout=60) == 1
        stopped_in = time.monotonic() - start
    finally:
        for p in procs:
            p.kill()
    log = (tmp_path / "two-0.log").read_text()
    assert "Another process of the run has most likely died" in log, log[-3000:]
    assert stopped_in < 30  # the lost connection stops it, well before the heartbeat times out
    assert [r["step"] for r in records(out)] == [1, 2, 3, 4]
    finish(launch(out), out)  # the same command again, on both
    log = (tmp_path / "two-0.log").read_text()
    assert "resuming" in log and "training a reference" not in log
    for x, y in zip(learner_leaves(out), learner_leaves(two_processes), strict=True):
        np.testing.assert_array_equal(x, y)
    assert records(out) == records(two_processes)
    # One run directory's worth of files: nothing doubled, nothing left half-written.
    assert checkpoint_steps(out) == [4, 6] and checkpoint_steps(out / "reference") == [2]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in one_process.iterdir())
    assert not [p for p in (out / "checkpoints").iterdir() if not p.name.isdigit()]
    assert len(list((out / "tb").iterdir())) == 2  # one event file per launch: process 0's
    # Another number of processes would split the rows of every batch differently.
    with pytest.raises(ValueError, match=r"written by 2 process\(es\).*--num-processes 2"):
        train(micro_run(out, STEPS + 2, *ACED, preset_name="smoke"))


def test_a_coordinator_that_never_answers_is_an_error_in_time(tmp_path, capsys):
    argv = ["train", "--preset", "smoke", *micro_overrides(tmp_path, 1)]
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "aced", *argv, "--coordinator", f"127.0.0.1:{free_port()}",
         "--num-processes", "2", "--process-id", "1", "--distributed-timeout", "3"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert "did not gather within --distributed-timeout 3 s" in done.stderr
    assert time.monotonic() - start < 60
    # Every command that can run across processes takes the options (here incomplete).
    for command_argv in (
        argv,
        ["eval", str(tmp_path)],
        ["reproduce", "--preset", "smoke", "--plan"],
        ["embed", str(tmp_path), "--out", str(tmp_path / "emb")],
    ):
        assert cli.main([*command_argv, "--coordinator", "127.0.0.1:1234"]) == 2
        assert "--num-processes, --process-id missing" in capsys.readouterr().err
