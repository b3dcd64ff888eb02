"""``aced embed``: a reference's embeddings of a dataset in checksummed, resumable shards,
read by the training loop (``reference.embeddings=DIR``) only when they fit the run."""

import json

import jax
import numpy as np
import pytest
from test_loop import ACED, assert_bitwise_equal, learner_leaves, micro_run

from aced import cli
from aced.data import SceneSource, builtin_tokenizer, web_split
from aced.models import TwoTower, model_checksum
from aced.train import embedding_cache
from aced.train.checkpoint import save_model
from aced.train.embedding_cache import MANIFEST, cache_key, read_embeddings, write_embeddings
from aced.train.loop import train
from aced.train.reference import cache_reference_embeddings
from aced.train.sharding import default_mesh

N = 40  # examples: 3 shards of 16 (the last one short), batches of 8


def micro_model(seed: int, *overrides: str) -> TwoTower:
    tokenizer = builtin_tokenizer(max_len=12)
    run = micro_run(None, 1, *overrides)
    config = run.model.two_tower(vocab_size=tokenizer.vocab_size, max_len=tokenizer.max_len)
    return TwoTower(config, key=jax.random.key(seed))


@pytest.fixture(scope="module")
def reference():
    return micro_model(0)


@pytest.fixture(scope="module")
def source():
    return SceneSource(web_split(N, seed=3))


def write(out, reference, source, **kwargs):
    kwargs = {"shard_size": 16, "batch_size": 8, "progress": False} | kwargs
    return write_embeddings(
        out, reference, source, builtin_tokenizer(max_len=12), mesh=default_mesh(), **kwargs
    )


def key_of(reference, source, max_len=12):
    return cache_key(reference, source, builtin_tokenizer(max_len=max_len))


def test_shards_hold_exactly_the_in_memory_cache(reference, source, tmp_path):
    manifest = write(tmp_path, reference, source)
    assert manifest["complete"] and [s["start"] for s in manifest["shards"]] == [0, 16, 32]
    assert manifest["model"] == model_checksum(reference) and manifest["num_examples"] == N
    zimg, ztxt = read_embeddings(tmp_path, key_of(reference, source))
    want = cache_reference_embeddings(
        reference, source, builtin_tokenizer(max_len=12), image_size=56, channels=1,
        mesh=default_mesh(), batch_size=8,
    )  # fmt: skip
    np.testing.assert_array_equal(zimg, want[0])  # bit for bit: the same batches
    np.testing.assert_array_equal(ztxt, want[1])
    assert not list(tmp_path.glob("*.partial"))


def test_a_killed_embed_resumes_from_its_finished_shards(reference, source, tmp_path, monkeypatch):
    write(tmp_path / "whole", reference, source)
    whole = read_embeddings(tmp_path / "whole", key_of(reference, source))
    real, calls = embedding_cache.save_file, []

    def dies_on_the_second_shard(arrays, path, metadata):
        calls.append(path)
        if len(calls) == 2:
            with open(path, "wb") as f:
                f.write(b"half a shard")  # what a kill mid-write leaves
            raise KeyboardInterrupt
        real(arrays, path, metadata)

    out = tmp_path / "killed"
    monkeypatch.setattr(embedding_cache, "save_file", dies_on_the_second_shard)
    with pytest.raises(KeyboardInterrupt):
        write(out, reference, source)
    manifest = json.loads((out / MANIFEST).read_text())
    assert not manifest["complete"] and [s["start"] for s in manifest["shards"]] == [0]
    with pytest.raises(ValueError, match="is incomplete: run `aced embed`"):
        read_embeddings(out, key_of(reference, source))
    monkeypatch.setattr(embedding_cache, "save_file", real)
    calls.clear()
    monkeypatch.setattr(embedding_cache, "save_file", lambda *a: (calls.append(a), real(*a)))
    write(out, reference, source)
    assert len(calls) == 2  # the first shard was kept, the other two written
    assert not list(out.glob("*.partial"))
    for got, want in zip(read_embeddings(out, key_of(reference, source)), whole):
        np.testing.assert_array_equal(got, want)


def test_a_damaged_shard_is_refused_then_rewritten(reference, source, tmp_path):
    write(tmp_path, reference, source)
    shard = tmp_path / "embeddings-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-4:] = b"\xff\xff\xff\xff"
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="embeddings-00001.safetensors is missing or damaged"):
        read_embeddings(tmp_path, key_of(reference, source))
    write(tmp_path, reference, source)  # the same command again repairs it
    read_embeddings(tmp_path, key_of(reference, source))


def test_a_cache_of_other_data_model_or_preprocessing_is_refused(reference, source, tmp_path):
    write(tmp_path, reference, source)
    cases = [
        (key_of(reference, SceneSource(web_split(N, seed=4))), "example ids are those of another"),
        (key_of(reference, SceneSource(web_split(N + 1, seed=3))), "example ids are those of"),
        (key_of(micro_model(1), source), "embedded by another model"),
        (key_of(reference, source, max_len=10), "preprocessing"),
    ]
    for key, message in cases:
        with pytest.raises(ValueError, match=message):
            read_embeddings(tmp_path, key)
    with pytest.raises(ValueError, match="holds other embeddings: .*another model"):
        write(tmp_path, micro_model(1), source)
    with pytest.raises(FileNotFoundError, match="no aced embed directory"):
        read_embeddings(tmp_path / "nothing", key_of(reference, source))


def test_aced_embed_then_train_reads_the_cache(reference, tmp_path, capfd):
    """The CLI writes the cache; an ACED run reading it trains bit for bit as one that
    embeds its data itself (both embed in batches of 512), and a cache of another model
    stops the run before it trains."""
    model_dir = save_model(reference, tmp_path / "ref")
    embed = ["embed", str(model_dir), "data.size=256", "--out", str(tmp_path / "emb")]
    assert cli.main([*embed, "--no-progress"]) == 0
    printed = capfd.readouterr().out
    assert "wrote" in printed and "256 examples x 16" in printed and "1 shard(s)" in printed
    uses = [*ACED, f"reference.path={model_dir}", "step.reference_embeddings=cached"]
    read = [*uses, f"reference.embeddings={tmp_path / 'emb'}"]
    cached = micro_run(tmp_path / "read", 2, *read, preset_name="aced")
    here = micro_run(tmp_path / "here", 2, *uses, preset_name="aced")
    assert train(cached)["flops_cumulative"] == train(here)["flops_cumulative"]
    assert "from " + str(tmp_path / "emb") in capfd.readouterr().err
    assert_bitwise_equal(learner_leaves(tmp_path / "read"), learner_leaves(tmp_path / "here"))

    other = save_model(micro_model(1), tmp_path / "other")
    read[len(ACED)] = f"reference.path={other}"
    stray = micro_run(tmp_path / "stray", 2, *read, preset_name="aced")
    with pytest.raises(ValueError, match="does not fit this run: it was embedded by another"):
        train(stray)
    assert not (tmp_path / "stray" / "checkpoints").exists()


def test_bad_embed_input_is_named(reference, tmp_path, capsys):
    with pytest.raises(
        ValueError, match="reference.embeddings=.* step.reference_embeddings=cached"
    ):
        online = ["reference.embeddings=x", "step.reference_embeddings=online"]
        micro_run(tmp_path, 1, *ACED, *online, preset_name="aced")
    assert cli.main(["embed", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 1
    assert "holds neither checkpoints nor model files" in capsys.readouterr().err
    assert cli.main(["embed", str(tmp_path), "train.steps=2", "--out", str(tmp_path / "o")]) == 2
    assert "only data.* fields" in capsys.readouterr().err
    model_dir = str(save_model(reference, tmp_path / "ref"))
    assert cli.main(["embed", model_dir, "--shard-size", "100", "--out", str(tmp_path / "o")]) == 2
    assert "shard size 100 is not a multiple of the batch size 512" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
