"""The training loop: logs, checkpoints, exact resume (also after SIGKILL), SIGINT, NaN, references, bad input."""

import json
import math
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from xla_flags import xla_flags

from aced.data import SceneSource, builtin_tokenizer, web_split
from aced.models import TwoTower, TwoTowerConfig
from aced.train import loop
from aced.train.checkpoint import (
    CHECKPOINTS,
    CheckpointError,
    checkpoint_steps,
    load_model,
    read_meta,
    restore_checkpoint,
)
from aced.train.config import RunConfig, apply_overrides, preset
from aced.train.learners import load_learner, template_state
from aced.train.logs import TrainingDiverged, check_finite
from aced.train.loop import train
from aced.train.reference import cache_reference_embeddings, check_reference
from aced.train.sharding import default_mesh

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

# Tiny towers and data. IID runs train on the whole super-batch (f = 0) with
# the settings of the reference preset, so that a reference trained here reuses
# the IID runs' compiled step: the file compiles two steps (IID, ACED).
MICRO = [
    "model.image_variant=mu/14",
    "model.embed_dim=16",
    "model.max_len=12",
    "data.super_batch_size=32",
    "data.size=256",
    "step.selection.filter_ratio=0.0",
    "step.optim.warmup_steps=1",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "train.eval_per_task=8",
    "train.eval_retrieval_size=8",
    "train.eval_batch_size=64",
    "train.progress=false",
    "reference.image_variant=mu/14",
    "reference.text_variant=mu",
    "reference.train_steps=2",
    "reference.curated_size=64",
    "reference.super_batch_size=32",
    "reference.warmup_steps=1",
]
ACED = ["step.selection.filter_ratio=0.5", "step.selection.n_chunks=2"]


def micro_overrides(out_dir: pathlib.Path, steps: int, *extra: str) -> list[str]:
    return [*MICRO, f"train.steps={steps}", f"train.out_dir={out_dir}", *extra]


def micro_run(
    out_dir: pathlib.Path, steps: int, *extra: str, preset_name: str = "iid"
) -> RunConfig:
    return apply_overrides(preset(preset_name), micro_overrides(out_dir, steps, *extra))


def learner_leaves(run_dir: pathlib.Path, step: int | None = None) -> list[np.ndarray]:
    model, _, _ = load_learner(run_dir if step is None else run_dir / CHECKPOINTS / str(step))
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(model, eqx.is_array))]


def full_state(run_dir: pathlib.Path, run: RunConfig):
    model = TwoTowerConfig.from_dict(read_meta(run_dir)["model"])
    return restore_checkpoint(run_dir, template_state(model, run, None))


def assert_bitwise_equal(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def records(run_dir: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def iid_run(tmp_path_factory):
    """An uninterrupted 4-step IID run."""
    out = tmp_path_factory.mktemp("iid")
    result = train(micro_run(out, 4, "train.keep_checkpoints=2", "train.eval_every=2"))
    return out, result


def test_run_logs_flops_checkpoints_and_exports(iid_run):
    out, result = iid_run
    assert result["step"] == 4 and not result["interrupted"]
    train_records = [r for r in records(out) if "loss/total" in r]
    assert [r["step"] for r in train_records] == [1, 2, 3, 4]
    running = 0.0
    for r in train_records:
        running += r["flops"]
        assert r["flops"] > 0 and r["examples_per_s"] > 0
        assert r["flops_cumulative"] == pytest.approx(running, rel=1e-12)
    periodic, evaluation = [r for r in records(out) if "eval/average" in r]
    assert (
        periodic["step"] == 2
        and periodic["flops_cumulative"] == train_records[1]["flops_cumulative"]
    )
    assert evaluation["step"] == 4 and evaluation["flops_cumulative"] == result["flops_cumulative"]
    assert set(json.loads((out / "eval.json").read_text())["scores"]) == {
        k.removeprefix("eval/") for k in evaluation if k.startswith("eval/")
    }
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert checkpoint_steps(out) == [2, 4]
    run = micro_run(out, 4)
    state, meta = full_state(out, run)
    assert int(state.step) == 4 and meta["data"] == {"epoch": 0, "position": 4 * 32}
    assert meta["flops_cumulative"] == result["flops_cumulative"]
    exported = [
        np.asarray(x) for x in jax.tree.leaves(eqx.filter(load_model(out / "model"), eqx.is_array))
    ]
    assert_bitwise_equal(
        exported, [np.asarray(x) for x in jax.tree.leaves(eqx.filter(state.learner, eqx.is_array))]
    )


def test_continued_run_is_bitwise_identical(iid_run, tmp_path):
    out, _ = iid_run
    train(micro_run(tmp_path, 2))
    (tmp_path / "metrics.jsonl").write_text(
        (tmp_path / "metrics.jsonl").read_text() + json.dumps({"step": 3, "stale": 1.0}) + "\n"
    )
    result = train(micro_run(tmp_path, 4))  # resumes at step 2
    assert result["step"] == 4
    assert_bitwise_equal(learner_leaves(tmp_path, 4), learner_leaves(out, 4))
    assert [r["step"] for r in records(tmp_path) if "loss/total" in r] == [1, 2, 3, 4]
    assert not any("stale" in r for r in records(tmp_path))


def _start_cli(out: pathlib.Path) -> subprocess.Popen:
    # The session's compilation cache (tests/conftest.py) is in the environment: the child
    # loads the step that the in-process runs of this file compiled.
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": xla_flags(8),  # the mesh of the in-process runs
    }
    command = [
        sys.executable,
        "-m",
        "aced",
        "train",
        "--preset",
        "iid",
        *micro_overrides(out, 10_000),
    ]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _signal_at_first_checkpoint(
    process: subprocess.Popen, out: pathlib.Path, sig: int
) -> tuple[int, str]:
    deadline = time.monotonic() + 300
    try:
        while not checkpoint_steps(out):
            if process.poll() is not None:
                raise AssertionError(f"training exited early:\n{process.stderr.read()}")
            assert time.monotonic() < deadline, "no checkpoint appeared in time"
            time.sleep(0.05)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, stderr


@pytest.fixture(scope="module")
def signalled_runs(tmp_path_factory, iid_run):  # after iid_run: its compiled step is cached
    """`aced train` asked for 10,000 steps, SIGKILLed (then another SIGINTed) as soon as
    its first checkpoint is on disk: mid-training."""
    root = tmp_path_factory.mktemp("signalled")
    runs = {}
    for sig, name in ((signal.SIGKILL, "killed"), (signal.SIGINT, "interrupted")):
        process = _start_cli(root / name)
        runs[sig] = (root / name, *_signal_at_first_checkpoint(process, root / name, sig))
    return runs


@pytest.mark.slow
def test_resume_after_sigkill_is_bitwise_identical(signalled_runs, tmp_path):
    killed, returncode, _ = signalled_runs[signal.SIGKILL]
    assert returncode == -signal.SIGKILL
    total = checkpoint_steps(killed)[-1] + 3  # the resumed run goes past the kill
    result = train(micro_run(killed, total))
    assert result["step"] == total
    train(micro_run(tmp_path / "whole", total))
    assert_bitwise_equal(learner_leaves(killed, total), learner_leaves(tmp_path / "whole", total))


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_exits_cleanly(signalled_runs):
    out, returncode, stderr = signalled_runs[signal.SIGINT]
    assert returncode == 130, stderr
    assert "SIGINT received" in stderr and "Traceback" not in stderr
    stopped = int(stderr.split("stopped at step ")[1].split(":")[0])
    assert checkpoint_steps(out)[-1] == stopped < 10_000
    assert not (out / "model").exists()


def test_nan_stops_naming_step_and_term_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    real = loop.compiled_step

    def poisoned(config, mesh):
        step = real(config, mesh)

        def run(state, batch, reference):
            state, metrics, chosen = step(state, batch, reference)
            if int(state.step) == 3:
                metrics = {**metrics, "loss/contrastive": jnp.asarray(jnp.nan, jnp.float32)}
            return state, metrics, chosen

        return run

    monkeypatch.setattr(loop, "compiled_step", poisoned)
    with pytest.raises(
        TrainingDiverged, match=r"step 3: loss/contrastive is nan.*last good checkpoint is step 2"
    ):
        train(micro_run(tmp_path, 6))
    assert checkpoint_steps(tmp_path) == [2]
    assert not (tmp_path / "model").exists()
    assert records(tmp_path)[-1]["step"] == 3  # the bad step is logged for diagnosis


def test_non_finite_scores_with_finite_losses_name_the_embeddings():
    """The train step does not reject non-finite selection inputs itself (a host callback
    would keep it out of the compilation cache): their scores stop the run here."""
    metrics = {"loss/total": 1.0, "score/all_mean": math.nan, "score/selected_mean": 0.5}
    with pytest.raises(
        TrainingDiverged,
        match=r"step 5: score/all_mean is nan \(the learnability scores.*reference's "
        r"embeddings are not finite.*No checkpoint",
    ):
        check_finite(metrics, 5, "No checkpoint was saved before.")


@pytest.mark.slow
def test_aced_trains_its_reference_first_and_reuses_it(tmp_path, capfd):
    run = micro_run(tmp_path, 2, *ACED, preset_name="smoke")
    assert run.step.method == "aced" and run.step.reference_embeddings == "cached"
    result = train(run)
    assert result["loss/kd"] > 0 and "eval/average" in result
    assert checkpoint_steps(tmp_path / "reference") == [2]
    reference_model = load_model(tmp_path / "reference" / "model")
    assert reference_model.config.embed_dim == 16
    # The micro reference has the learner's towers: the run says it is not larger.
    assert "is not larger than the learner" in capfd.readouterr().err
    again = train(run)  # complete run: nothing to retrain, same learner
    assert "training a reference" not in capfd.readouterr().err
    assert again["step"] == 2


def test_cached_embeddings_are_the_reference_embeddings(iid_run):
    from aced.eval import embed_images, embed_texts

    out, _ = iid_run
    reference, tokenizer, _ = load_learner(out)  # a trained model of the micro shape
    source = SceneSource(web_split(24, seed=3))
    zimg, ztxt = cache_reference_embeddings(
        reference, source, tokenizer, image_size=56, channels=1, mesh=default_mesh(), batch_size=16
    )
    assert zimg.shape == ztxt.shape == (24, 16)
    # The evaluation's embedding path (one device, batches of 64, already compiled) as the truth.
    ids = np.array([0, 5, 17, 23])
    split = source.split
    np.testing.assert_allclose(
        zimg[ids], embed_images(reference, split.images[ids], 1, 64), atol=1e-5
    )
    tokens = tokenizer([split.captions[i] for i in ids])
    np.testing.assert_allclose(ztxt[ids], embed_texts(reference, tokens, 64), atol=1e-5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.stepz=3"], r"unknown config key 'train.stepz'"),
        (["train.steps=many"], r"train.steps='many' must be an integer"),
        (["step.selection.filter_ratio=1.0"], r"filter_ratio=1.0 must be in \[0, 1\)"),
        (
            ["step.selection.n_chunks=7"],
            r"n_select=64 .* must be divisible by selection.n_chunks=7",
        ),
        (["data.size=100"], r"data.super_batch_size=256 exceeds the dataset's data.size=100"),
        (["step.method=iid"], r"distils|no KD term"),
    ],
)
def test_bad_overrides_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(preset("aced"), overrides)


def test_iid_with_cached_reference_embeddings_is_refused():
    with pytest.raises(ValueError, match="uses no reference; set step.reference_embeddings=online"):
        apply_overrides(preset("iid"), ["step.reference_embeddings=cached"])


def test_sub_batch_not_divisible_by_devices_fails_before_training(tmp_path):
    run = micro_run(
        tmp_path / "run", 2, "data.super_batch_size=40", "step.selection.filter_ratio=0.5"
    )
    with pytest.raises(
        ValueError, match=r"sub-batch b=\(1-f\)\*B=20 must be divisible by the 8 devices"
    ):
        train(run)
    assert not (tmp_path / "run").exists()


def test_incompatible_reference_is_refused(tmp_path):
    tokenizer = builtin_tokenizer(max_len=12)

    def config(embed_dim: int, image_size: int) -> TwoTowerConfig:
        return TwoTowerConfig.from_variants(
            image_variant="mu/14",
            text_variant="mu",
            embed_dim=embed_dim,
            image_size=image_size,
            vocab_size=tokenizer.vocab_size,
            max_len=12,
            image_overrides={"channels": 1},
        )

    learner = config(16, 56)
    check_reference(config(32, 56), learner, width=None, origin="r")  # widths may differ
    with pytest.raises(
        ValueError, match=r"reference r does not fit.*width 32, not reference.embed_dim=16"
    ):
        check_reference(config(32, 56), learner, width=16, origin="r")
    with pytest.raises(ValueError, match=r"reads 28px images"):
        check_reference(config(16, 28), learner, width=None, origin="r")
    from aced.train.checkpoint import save_model

    # Zero weights of the right shapes: no initialisation to compile.
    skeleton = eqx.filter_eval_shape(TwoTower, config(8, 56), key=jax.random.key(0))
    zeros = jax.tree.map(
        lambda x: np.zeros(x.shape, x.dtype) if isinstance(x, jax.ShapeDtypeStruct) else x, skeleton
    )
    save_model(zeros, tmp_path / "ref")
    run = micro_run(
        tmp_path / "run",
        2,
        *ACED,
        f"reference.path={tmp_path / 'ref'}",
        "reference.embed_dim=16",
        preset_name="smoke",
    )
    with pytest.raises(ValueError, match=r"embeds into width 8, not reference.embed_dim=16"):
        train(run)


def test_damaged_checkpoint_stops_the_resume(iid_run, tmp_path):
    out, _ = iid_run
    shutil.copytree(out, tmp_path / "run")
    meta = tmp_path / "run" / CHECKPOINTS / "4" / "meta" / "metadata"
    meta.write_text(meta.read_text()[:10])
    with pytest.raises(
        CheckpointError, match=r"checkpoints/4 cannot be restored.*older step \(2\)"
    ):
        train(micro_run(tmp_path / "run", 6))


def test_tensorboard_writer_is_imported_without_torch_and_torch_still_imports():
    # A fresh process: tensorboardX imports torch wherever it is installed, unless aced
    # keeps it out (aced.train.logs.summary_writer_class); torch itself stays importable.
    probe = (
        "import importlib.util, sys\n"
        "from aced.train.logs import summary_writer_class\n"
        "writer = summary_writer_class()\n"
        "assert writer.__name__ == 'SummaryWriter' and 'torch' not in sys.modules\n"
        "if importlib.util.find_spec('torch'):\n"
        "    import torch\n"
        "    assert sys.modules['torch'] is torch\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
