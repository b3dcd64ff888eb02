"""Checkpoints: exact round trips, retention, atomicity, damaged files, a full disk, model files."""

import errno
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from aced.models import TwoTower, TwoTowerConfig
from aced.train.checkpoint import (
    CHECKPOINTS,
    CheckpointError,
    checkpoint_steps,
    load_model,
    open_checkpoints,
    read_meta,
    restore_checkpoint,
    save_checkpoint,
    save_model,
)
from aced.train.config import method_preset
from aced.train.state import init_train_state

# After a failed restore, tensorstore may still post results to orbax's closed event loop.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def micro_config(embed_dim: int = 16) -> TwoTowerConfig:
    return TwoTowerConfig.from_variants(
        image_variant="mu/14", text_variant="mu", embed_dim=embed_dim, image_size=28,
        vocab_size=20, max_len=8, image_overrides={"channels": 1},
    )


def fresh_state(embed_dim: int = 16):
    learner = TwoTower(micro_config(embed_dim), key=jax.random.key(0))
    return init_train_state(learner, method_preset("iid"), jax.random.key(1))


def scrambled(state, step: int, seed: int = 0):
    """The state with every float leaf distinct and random, so that a swapped or zeroed leaf shows."""
    arrays, static = eqx.partition(state, eqx.is_inexact_array)
    rng = np.random.default_rng(seed)
    arrays = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape).astype(x.dtype)), arrays)
    state = eqx.combine(arrays, static)
    return eqx.tree_at(lambda s: (s.step, s.key), state, (jnp.array(step, jnp.int32), jax.random.key(100 + step)))


def assert_same_state(a, b) -> None:
    key_a, key_b = jax.random.key_data(a.key), jax.random.key_data(b.key)
    np.testing.assert_array_equal(key_a, key_b)
    leaves_a = jax.tree.leaves(eqx.filter(eqx.tree_at(lambda s: s.key, a, key_a), eqx.is_array))
    leaves_b = jax.tree.leaves(eqx.filter(eqx.tree_at(lambda s: s.key, b, key_b), eqx.is_array))
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def template():
    return fresh_state()


def save_steps(run_dir: pathlib.Path, template, steps, keep: int = 5) -> dict[int, object]:
    states = {}
    with open_checkpoints(run_dir, keep=keep) as manager:
        for step in steps:
            states[step] = scrambled(template, step, seed=step)
            save_checkpoint(manager, states[step], {"data": {"epoch": 0, "position": step}, "note": "x"})
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


def test_keeps_the_latest_n(tmp_path, template):
    states = save_steps(tmp_path, template, [1, 2, 3, 4], keep=2)
    assert checkpoint_steps(tmp_path) == [3, 4]
    restored, _ = restore_checkpoint(tmp_path, template, step=3)
    assert_same_state(restored, states[3])
    with pytest.raises(CheckpointError, match=r"no checkpoint of step 1 .*available: \[3, 4\]"):
        restore_checkpoint(tmp_path, template, step=1)


def test_save_writes_to_a_temporary_directory_then_renames(tmp_path, template, monkeypatch):
    seen = []
    original = ocp.handlers.JsonCheckpointHandler._save_fn

    async def spy(self, x, directory):
        root = tmp_path / CHECKPOINTS
        seen.append((str(directory), (root / "3").exists(), checkpoint_steps(tmp_path)))
        return await original(self, x, directory)

    monkeypatch.setattr(ocp.handlers.JsonCheckpointHandler, "_save_fn", spy)
    save_steps(tmp_path, template, [3])
    (written, final_existed, visible), = seen
    assert "orbax-checkpoint-tmp" in written and not final_existed and visible == []
    assert checkpoint_steps(tmp_path) == [3]
    assert [p.name for p in (tmp_path / CHECKPOINTS).iterdir() if "tmp" in p.name] == []


def test_leftover_of_a_killed_save_is_ignored_and_removed(tmp_path, template):
    states = save_steps(tmp_path, template, [2])
    partial = tmp_path / CHECKPOINTS / "4.orbax-checkpoint-tmp-1234"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "junk").write_bytes(b"\0" * 10)
    assert checkpoint_steps(tmp_path) == [2]
    restored, _ = restore_checkpoint(tmp_path, template)
    assert_same_state(restored, states[2])
    open_checkpoints(tmp_path, keep=2).close()
    assert not partial.exists()


def test_disk_full_leaves_the_previous_checkpoint_intact(tmp_path, template, monkeypatch):
    states = save_steps(tmp_path, template, [1])

    async def full(self, x, directory):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.handlers.JsonCheckpointHandler, "_save_fn", full)
    with open_checkpoints(tmp_path, keep=2) as manager:
        with pytest.raises(CheckpointError, match=r"step 2 .*disk is full.*step 1\) is intact"):
            save_checkpoint(manager, scrambled(template, 2), {})
    assert sorted(p.name for p in (tmp_path / CHECKPOINTS).iterdir()) == ["1"]
    monkeypatch.undo()
    restored, _ = restore_checkpoint(tmp_path, template)
    assert_same_state(restored, states[1])


def _truncate_arrays(step_dir: pathlib.Path) -> None:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for path in files:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_array_bytes(step_dir: pathlib.Path) -> None:
    for path in (step_dir / "state" / "d").iterdir():
        data = bytearray(path.read_bytes())
        for i in range(len(data) // 3, len(data), 97):
            data[i] ^= 0x5A
        path.write_bytes(bytes(data))


def _cut_meta(step_dir: pathlib.Path) -> None:
    path = step_dir / "meta" / "metadata"
    path.write_text(path.read_text()[:20])


@pytest.mark.parametrize("damage", [_truncate_arrays, _flip_array_bytes, _cut_meta])
def test_damaged_checkpoint_names_the_path_and_an_older_step(tmp_path, template, damage):
    save_steps(tmp_path, template, [1, 2])
    damage(tmp_path / CHECKPOINTS / "2")
    with pytest.raises(CheckpointError, match=r"checkpoints/2 cannot be restored.*older step \(1\).*afresh"):
        restore_checkpoint(tmp_path, template)


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
