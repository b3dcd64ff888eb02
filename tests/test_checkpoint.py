"""Checkpoints through their public behaviour: exact round trips, retention, atomicity,
damaged files, a full disk (aced's own write step, and a real small filesystem where
it can be mounted), SIGKILL in the middle of a save, model files.

No test touches a private attribute of orbax or tensorstore: failures are made on
disk, at `aced.train.checkpoint.save.write_record` (aced's own write step), or by a
process killed while its save is paused (`aced.train.checkpoint.PAUSE_ENV`).
"""

import errno
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

import equinox as eqx
import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from xla_flags import xla_flags

from aced import cli
from aced.models import TwoTower, TwoTowerConfig
from aced.train.checkpoint import (
    CHECKPOINTS,
    FORMAT,
    PAUSE_ENV,
    RECORD,
    STATE,
    CheckpointError,
    checkpoint_steps,
    load_model,
    open_checkpoints,
    read_meta,
    restore_checkpoint,
    save_checkpoint,
    save_model,
    write_record,
)
from aced.train.checkpoint import save as saving
from aced.train.checkpoint.layout import array_crc, discard, file_list, pack, split_state, unpack
from aced.train.config import preset
from aced.train.sharding import default_mesh, replicate
from aced.train.state import init_train_state

# After a failed restore, tensorstore may still post results to orbax's closed event loop.
pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning"),
]


def micro_config(embed_dim: int = 16) -> TwoTowerConfig:
    return TwoTowerConfig.from_variants(
        image_variant="mu/14",
        text_variant="mu",
        embed_dim=embed_dim,
        image_size=28,
        vocab_size=20,
        max_len=8,
        image_overrides={"channels": 1},
    )


def fresh_state(embed_dim: int = 16):
    learner = TwoTower(micro_config(embed_dim), key=jax.random.key(0))
    return init_train_state(learner, preset("iid").step, jax.random.key(1))


def scrambled(state, step: int, seed: int = 0):
    """The state with every float leaf distinct and random, so that a swapped or zeroed leaf shows."""
    arrays, static = eqx.partition(state, eqx.is_inexact_array)
    rng = np.random.default_rng(seed)
    arrays = jax.tree.map(
        lambda x: jnp.asarray(rng.standard_normal(x.shape).astype(x.dtype)), arrays
    )
    state = eqx.combine(arrays, static)
    return eqx.tree_at(
        lambda s: (s.step, s.key), state, (jnp.array(step, jnp.int32), jax.random.key(100 + step))
    )


def assert_same_state(a, b) -> None:
    key_a, key_b = jax.random.key_data(a.key), jax.random.key_data(b.key)
    np.testing.assert_array_equal(key_a, key_b)
    leaves_a = jax.tree.leaves(eqx.filter(eqx.tree_at(lambda s: s.key, a, key_a), eqx.is_array))
    leaves_b = jax.tree.leaves(eqx.filter(eqx.tree_at(lambda s: s.key, b, key_b), eqx.is_array))
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def listing(run_dir: pathlib.Path) -> list[str]:
    return sorted(p.name for p in (run_dir / CHECKPOINTS).iterdir())


@pytest.fixture(scope="module")
def template():
    return fresh_state()


def save_steps(run_dir: pathlib.Path, template, steps, keep: int = 5) -> dict[int, object]:
    states = {}
    with open_checkpoints(run_dir, keep=keep) as checkpoints:
        for step in steps:
            states[step] = scrambled(template, step, seed=step)
            meta = {"data": {"epoch": 0, "position": step}, "note": "x"}
            save_checkpoint(checkpoints, states[step], meta)
    return states


def test_round_trip_is_bitwise_and_keeps_meta(tmp_path, template):
    states = save_steps(tmp_path, template, [7])
    restored, meta = restore_checkpoint(tmp_path, template)
    assert int(restored.step) == 7
    assert_same_state(restored, states[7])
    assert jax.random.key_impl(restored.key) == jax.random.key_impl(template.key)
    assert meta["data"] == {"epoch": 0, "position": 7} and meta["note"] == "x"
    # An abstract template (no weights allocated) restores the same arrays.
    abstract = eqx.filter_eval_shape(fresh_state)
    again, _ = restore_checkpoint(tmp_path, abstract, step=7)
    assert_same_state(again, states[7])


def test_restore_places_each_array_as_its_template_does(tmp_path, template):
    mesh = default_mesh()
    replicated = replicate(template, mesh)
    states = save_steps(tmp_path, template, [3])
    restored, _ = restore_checkpoint(tmp_path, replicated)
    assert_same_state(restored, states[3])
    for leaf in jax.tree.leaves(eqx.filter(restored, eqx.is_array)):
        assert leaf.sharding == NamedSharding(mesh, PartitionSpec())


def test_the_arrays_are_packed_by_dtype(tmp_path, template):
    save_steps(tmp_path, template, [2])
    record = read_meta(tmp_path)
    arrays, _, _ = split_state(template)
    assert record["format"] == FORMAT == 2 and len(record["arrays"]) == len(arrays) > 50
    by_dtype = {}
    for name, a in arrays.items():
        by_dtype[str(a.dtype)] = by_dtype.get(str(a.dtype), 0) + a.size
        assert record["arrays"][name]["shape"] == list(a.shape)
    assert record["packed"] == by_dtype and set(by_dtype) == {"float32", "int32", "uint32"}


array_specs = st.lists(
    st.tuples(
        st.sampled_from([np.float32, np.int32, np.uint32, np.bool_, jnp.bfloat16, np.float64]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    ),
    max_size=8,
)


@hypothesis.given(array_specs, st.integers(0, 2**32 - 1))
def test_unpack_inverts_pack(specs, seed):
    rng = np.random.default_rng(seed)
    arrays = {
        f"leaf{i}": np.asarray(rng.standard_normal(shape) * 100).astype(dtype)
        for i, (dtype, shape) in enumerate(specs)
    }
    packed, offsets = pack(arrays)
    assert {d: p.shape for d, p in packed.items()} == {
        str(a.dtype): (sum(b.size for b in arrays.values() if b.dtype == a.dtype),)
        for a in arrays.values()
    }
    layout = {
        name: {"shape": list(a.shape), "dtype": str(a.dtype), "offset": offsets[name]}
        for name, a in arrays.items()
    }
    for name, out in unpack(packed, layout).items():
        assert out.dtype == arrays[name].dtype and out.shape == arrays[name].shape
        np.testing.assert_array_equal(out, arrays[name])


def save_format_1(run_dir: pathlib.Path, state, meta: dict) -> None:
    """The checkpoint of ``state.step`` as aced wrote it before packing (format 1): one
    orbax array per leaf under its flat name; each leaf's shape, dtype and CRC32 in the
    record, with no offsets."""
    step_dir = run_dir / CHECKPOINTS / str(int(state.step))
    arrays = {name: np.asarray(a) for name, a in split_state(state)[0].items()}
    checkpointer = ocp.Checkpointer(ocp.StandardCheckpointHandler())
    checkpointer.save(step_dir / STATE, args=ocp.args.StandardSave(arrays))
    checkpointer.close()
    record = {
        **meta,
        "format": 1,
        "step": int(state.step),
        "key_impl": str(jax.random.key_impl(state.key)),
        "arrays": {
            name: {"shape": list(a.shape), "dtype": str(a.dtype), "crc32": array_crc(a)}
            for name, a in arrays.items()
        },
        "files": file_list(step_dir / STATE),
    }
    write_record(step_dir / RECORD, record)


@pytest.mark.parametrize("damage", [None, "_flip_array_bytes", "_wrong_checksum"])
def test_a_checkpoint_of_format_1_restores_bitwise_and_its_damage_is_found(
    tmp_path, template, damage
):
    states = save_steps(tmp_path, template, [1])
    state = scrambled(template, 5, seed=5)
    save_format_1(tmp_path, state, {"data": {"epoch": 0, "position": 5}})
    if damage is None:
        restored, meta = restore_checkpoint(tmp_path, template)
        assert meta["format"] == 1 and meta["data"]["position"] == 5
        assert_same_state(restored, state)
        # The next save after a resume writes the current format beside it.
        save_steps(tmp_path, template, [6])
        assert read_meta(tmp_path)["format"] == FORMAT
        assert_same_state(restore_checkpoint(tmp_path, template, step=1)[0], states[1])
        return
    step_dir = tmp_path / CHECKPOINTS / "5"
    if damage == "_flip_array_bytes":
        _flip_array_bytes(step_dir)
        _edit_record(_without_file_list)(step_dir)  # so that orbax and the CRCs meet it
    else:
        _edit_record(_wrong_checksum)(step_dir)
    with pytest.raises(
        CheckpointError, match=r"checkpoints/5 cannot be restored.*older step \(1\)"
    ):
        restore_checkpoint(tmp_path, template)


def test_keeps_the_latest_n(tmp_path, template):
    states = save_steps(tmp_path, template, [1, 2, 3, 4], keep=2)
    assert checkpoint_steps(tmp_path) == [3, 4] and listing(tmp_path) == ["3", "4"]
    restored, _ = restore_checkpoint(tmp_path, template, step=3)
    assert_same_state(restored, states[3])
    with pytest.raises(CheckpointError, match=r"no checkpoint of step 1 .*available: \[3, 4\]"):
        restore_checkpoint(tmp_path, template, step=1)


def test_a_step_is_visible_only_once_complete(tmp_path, template, monkeypatch):
    seen = []
    write = saving.write_record

    def spy(path, record):
        partial = path.parent.parent
        final = (tmp_path / CHECKPOINTS / "3").exists()
        seen.append((partial.name, (partial / STATE).is_dir(), checkpoint_steps(tmp_path), final))
        write(path, record)

    monkeypatch.setattr(saving, "write_record", spy)
    save_steps(tmp_path, template, [3])
    # The arrays, then the record, go into a partial directory, renamed when both are on disk.
    assert seen == [("3.partial", True, [], False)]
    assert checkpoint_steps(tmp_path) == [3] and listing(tmp_path) == ["3"]


@pytest.mark.parametrize("leftover", ["4.partial", "4.orbax-checkpoint-tmp-1234", "1.deleting"])
def test_leftover_of_a_killed_save_is_ignored_and_removed(tmp_path, template, leftover):
    states = save_steps(tmp_path, template, [2])
    partial = tmp_path / CHECKPOINTS / leftover
    (partial / STATE).mkdir(parents=True)
    (partial / STATE / "junk").write_bytes(b"\0" * 10)
    assert checkpoint_steps(tmp_path) == [2]
    restored, _ = restore_checkpoint(tmp_path, template)
    assert_same_state(restored, states[2])
    open_checkpoints(tmp_path, keep=2).close()
    assert listing(tmp_path) == ["2"]


def _no_space(path, record):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def _no_permission(path, record):
    raise PermissionError(errno.EACCES, "Permission denied", str(path))


@pytest.mark.parametrize(
    "failure, message",
    [
        (_no_space, r"step 2 .*disk is full.*step 1\) is intact\. Free disk space"),
        (
            _no_permission,
            r"step 2 .*the write failed.*Permission denied.*step 1\) is intact\. Make",
        ),
    ],
)
def test_failed_save_leaves_the_previous_checkpoint_intact(
    tmp_path, template, monkeypatch, failure, message
):
    states = save_steps(tmp_path, template, [1])
    monkeypatch.setattr(saving, "write_record", failure)
    checkpoints = open_checkpoints(tmp_path, keep=1)
    with pytest.raises(CheckpointError, match=message):
        save_checkpoint(checkpoints, scrambled(template, 2), {})
    assert listing(tmp_path) == ["1"]
    monkeypatch.undo()
    restored, _ = restore_checkpoint(tmp_path, template)
    assert_same_state(restored, states[1])


def test_failed_first_save_and_interrupted_save_leave_nothing(tmp_path, template, monkeypatch):
    monkeypatch.setattr(saving, "write_record", _no_space)
    checkpoints = open_checkpoints(tmp_path, keep=2)
    with pytest.raises(CheckpointError, match="disk is full.*no earlier checkpoint exists"):
        save_checkpoint(checkpoints, scrambled(template, 1), {})

    def interrupted(path, record):
        raise KeyboardInterrupt

    monkeypatch.setattr(saving, "write_record", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(checkpoints, scrambled(template, 1), {})
    assert listing(tmp_path) == []
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        restore_checkpoint(tmp_path, template)


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs mounted at ``tmp_path/disk`` (root only; skipped where mounting is refused)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)]
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small filesystem needs root")
    done = subprocess.run(mount, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], check=False, capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)


def _fill(disk: pathlib.Path, headroom: int) -> pathlib.Path:
    """Fill `disk` but for about `headroom` bytes."""
    filler, chunk, size = disk / "filler", b"\0" * (1 << 16), 0
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)  # unbuffered: no write left for close
    try:
        while True:
            size += os.write(descriptor, chunk)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(descriptor)
    os.truncate(filler, max(0, size - headroom))
    return filler


@pytest.mark.parametrize("headroom", [0, 1 << 20], ids=["no-space", "space-for-part-of-the-arrays"])
def test_a_real_full_disk_leaves_the_previous_checkpoint_intact(small_disk, template, headroom):
    states = save_steps(small_disk, template, [1])
    filler = _fill(small_disk, headroom)
    checkpoints = open_checkpoints(small_disk, keep=1)
    with pytest.raises(CheckpointError, match=r"step 2 .*disk is full.*step 1\) is intact"):
        save_checkpoint(checkpoints, scrambled(template, 2, seed=2), {})
    assert listing(small_disk) == ["1"]
    restored, _ = restore_checkpoint(small_disk, template)
    assert_same_state(restored, states[1])
    # Once space is freed, the same save succeeds and replaces the old step.
    filler.unlink()
    states.update(save_steps(small_disk, template, [2], keep=1))
    assert listing(small_disk) == ["2"]
    restored, _ = restore_checkpoint(small_disk, template)
    assert_same_state(restored, states[2])


def test_a_failed_step_stays_removed_while_a_writer_thread_finishes(tmp_path):
    """orbax raises when one writer thread fails; another may still re-create files in the
    step's directory (as tensorstore does, parents included) after aced removed it."""
    partial = tmp_path / "2.partial"
    (partial / "state").mkdir(parents=True)

    def late_writer():
        time.sleep(0.1)
        (partial / "state" / "d").mkdir(parents=True, exist_ok=True)
        (partial / "state" / "d" / "chunk").write_bytes(b"late")

    writer = threading.Thread(target=late_writer)
    writer.start()
    discard(partial)
    writer.join()
    assert not partial.exists()


def _array_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
    files = [p for p in (step_dir / STATE).rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    return files


def _truncate_arrays(step_dir: pathlib.Path) -> None:
    for path in _array_files(step_dir):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_array_bytes(step_dir: pathlib.Path) -> None:
    for path in _array_files(step_dir):
        data = bytearray(path.read_bytes())
        for i in range(len(data) // 3, len(data), 97):
            data[i] ^= 0x5A
        path.write_bytes(bytes(data))


def _empty_every_state_file(step_dir: pathlib.Path) -> None:
    for path in (step_dir / STATE).rglob("*"):
        if path.is_file():
            path.write_bytes(b"")


def _delete_array_files(step_dir: pathlib.Path) -> None:
    for path in _array_files(step_dir):
        path.unlink()


def _delete_state_manifests(step_dir: pathlib.Path) -> None:
    for path in (step_dir / STATE).rglob("manifest.ocdbt"):
        path.unlink()


def _delete_state(step_dir: pathlib.Path) -> None:
    shutil.rmtree(step_dir / STATE)


def _state_is_a_file(step_dir: pathlib.Path) -> None:
    shutil.rmtree(step_dir / STATE)
    (step_dir / STATE).write_text("not a directory")


def _cut_record(step_dir: pathlib.Path) -> None:
    path = step_dir / RECORD
    path.write_text(path.read_text()[:20])


def _delete_record(step_dir: pathlib.Path) -> None:
    (step_dir / RECORD).unlink()


def _edit_record(edit):
    def damage(step_dir: pathlib.Path) -> None:
        path = step_dir / RECORD
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))

    damage.__name__ = edit.__name__
    return damage


def _wrong_checksum(record: dict) -> dict:
    first = min(record["arrays"])
    record["arrays"][first]["crc32"] ^= 1
    return record


def _no_array_list(record: dict) -> dict:
    del record["arrays"]
    return record


def _not_a_record(record: dict) -> list:
    return [record]


def _another_step(record: dict) -> dict:
    return {**record, "step": 1}


def _unknown_key_impl(record: dict) -> dict:
    return {**record, "key_impl": "no-such-prng"}


def _offset_beyond_its_array(record: dict) -> dict:
    last = max(record["arrays"], key=lambda name: record["arrays"][name]["offset"])
    record["arrays"][last]["offset"] = record["packed"][record["arrays"][last]["dtype"]]
    return record


def _swapped_offsets(record: dict) -> dict:
    first, second = sorted(
        (entry for entry in record["arrays"].values() if entry["dtype"] == "float32"),
        key=lambda entry: entry["offset"],
    )[:2]
    first["offset"], second["offset"] = second["offset"], first["offset"]
    return record


def _no_packed_list(record: dict) -> dict:
    del record["packed"]
    return record


DAMAGES = [
    _truncate_arrays,
    _flip_array_bytes,
    _empty_every_state_file,
    _delete_array_files,
    _delete_state_manifests,
    _delete_state,
    _state_is_a_file,
    _cut_record,
    _delete_record,
    _edit_record(_wrong_checksum),
    _edit_record(_no_array_list),
    _edit_record(_not_a_record),
    _edit_record(_another_step),
    _edit_record(_unknown_key_impl),
    _edit_record(_offset_beyond_its_array),
    _edit_record(_swapped_offsets),
    _edit_record(_no_packed_list),
]


def _without_file_list(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "files"}


@pytest.mark.parametrize("damage", DAMAGES, ids=[d.__name__.strip("_") for d in DAMAGES])
@pytest.mark.parametrize(
    "found_by",
    ["aced", "orbax"],
    ids=["found-by-the-file-list", "met-by-orbax-and-tensorstore"],
)
def test_damaged_checkpoint_names_the_path_and_an_older_step(tmp_path, template, damage, found_by):
    save_steps(tmp_path, template, [1, 2])
    if found_by == "orbax":  # as in a checkpoint written before aced listed orbax's files
        _edit_record(_without_file_list)(tmp_path / CHECKPOINTS / "2")
    damage(tmp_path / CHECKPOINTS / "2")
    path = tmp_path.absolute() / CHECKPOINTS / "2"
    expected = (
        rf"checkpoint {path} cannot be restored: .+\. It is truncated or corrupted: delete {path} "
        r"to resume from an older step \(1\), or start afresh with another train.out_dir"
    )
    with pytest.raises(CheckpointError, match=expected):
        restore_checkpoint(tmp_path, template)


def test_only_intact_older_steps_are_offered(tmp_path, template):
    save_steps(tmp_path, template, [1, 2, 3])
    _cut_record(tmp_path / CHECKPOINTS / "2")
    _flip_array_bytes(tmp_path / CHECKPOINTS / "3")
    with pytest.raises(
        CheckpointError, match=r"checkpoints/3 cannot be restored.*older step \(1\),"
    ):
        restore_checkpoint(tmp_path, template)
    shutil.rmtree(tmp_path / CHECKPOINTS / "1")
    with pytest.raises(CheckpointError, match=r"checkpoints/3 .*no older intact checkpoint exists"):
        restore_checkpoint(tmp_path, template)
    with pytest.raises(CheckpointError, match=r"checkpoints/2 .*unreadable.*no older intact"):
        restore_checkpoint(tmp_path, template, step=2)


def test_checkpoint_of_another_model_is_refused(tmp_path, template):
    save_steps(tmp_path, template, [1])
    with pytest.raises(CheckpointError, match="another model"):
        restore_checkpoint(tmp_path, fresh_state(embed_dim=8))
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        read_meta(tmp_path / "elsewhere")


def test_model_files_round_trip_and_damage(tmp_path, template):
    model = scrambled(template, 1).learner
    save_model(model, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    for x, y in zip(jax.tree.leaves(model), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert loaded.config == model.config
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model files in .*model are unreadable"):
        load_model(tmp_path / "model")
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        load_model(tmp_path / "nowhere")


# `aced train` at toy scale: two checkpoints (steps 2 and 4) before the end (step 6).
TINY = [
    "model.image_variant=mu/14", "model.embed_dim=16", "model.max_len=12",
    "data.super_batch_size=32", "data.size=256", "step.selection.filter_ratio=0.0",
    "step.optim.warmup_steps=1", "train.log_every=1", "train.checkpoint_every=2",
    "train.eval_per_task=8", "train.eval_retrieval_size=8", "train.eval_batch_size=64",
    "train.progress=false", "train.steps=6",
]  # fmt: skip


def train_command(out: pathlib.Path) -> list[str]:
    return ["train", "--preset", "iid", *TINY, f"train.out_dir={out}"]


def learner_leaves(run_dir: pathlib.Path) -> list[np.ndarray]:
    model = load_model(run_dir / "model")
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(model, eqx.is_array))]


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_save_then_resume_is_bitwise_identical(tmp_path, capsys):
    killed, whole, paused, log = (tmp_path / n for n in ("killed", "whole", "paused", "killed.log"))
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": xla_flags(8),  # the mesh of tests/conftest.py
        PAUSE_ENV: f"4:{paused}",
    }
    # The uninterrupted run first: the child loads its compiled step from the session's cache.
    assert cli.main(train_command(whole)) == 0
    command = [sys.executable, "-m", "aced", *train_command(killed)]
    with open(log, "w") as out:  # the child keeps its own copy
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not paused.exists():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the save of step 4 did not start in time"
            time.sleep(0.05)
        # Paused inside the save of step 4: orbax has written the arrays, aced not the record.
        partial = pathlib.Path(paused.read_text())
        assert partial == killed.absolute() / CHECKPOINTS / "4.partial"
        assert (partial / STATE).is_dir() and not (partial / RECORD).exists()
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
    assert checkpoint_steps(killed) == [2] and read_meta(killed)["step"] == 2
    capsys.readouterr()
    assert cli.main(train_command(killed)) == 0
    assert "from step 2" in capsys.readouterr().err  # it resumed
    assert listing(killed) == ["4", "6"]
    for x, y in zip(learner_leaves(killed), learner_leaves(whole), strict=True):
        np.testing.assert_array_equal(x, y)
