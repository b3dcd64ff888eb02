"""Evaluation on your own data (`aced.eval.user_tasks`, ``aced eval RUN --tasks FILE``)."""

import io
import json
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from test_loop import micro_overrides  # the same micro run as the loop's tests

from aced import cli
from aced.data.tokenize import build_word_tokenizer, save_tokenizer
from aced.eval.user_tasks import load_tasks, retrieval_scores, run_tasks, zero_shot_scores

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
TEMPLATES = "a photo of a {} thing.\n{}\n"


class ImageConfig(typing.NamedTuple):
    image_size: int
    channels: int


class Config(typing.NamedTuple):
    image: ImageConfig


class Oracle(eqx.Module):
    """Embeds an image as its dominant colour and a text as the colour word it names."""

    colour_of_token: jax.Array  # vocabulary -> colour index, -1 for other words
    permute: bool = eqx.field(static=True)
    config: Config = eqx.field(static=True)
    blind: bool = eqx.field(static=True, default=False)  # every image the same embedding

    def embed_images(self, images):
        colour = jnp.argmax(images.mean(axis=(1, 2)), axis=-1)
        colour = jnp.zeros_like(colour) if self.blind else (colour + int(self.permute)) % 3
        return jax.nn.one_hot(colour, 3)

    def embed_texts(self, tokens):
        return jax.nn.one_hot(self.colour_of_token[tokens].max(axis=1), 3)


def _png(colour) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((14, 14, 3), colour, np.uint8)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("own")
    names = list(COLOURS)
    labels = [0, 1, 2, 2, 1, 0, 0]
    pq.write_table(
        pa.table({"image": [_png(COLOURS[names[i]]) for i in labels], "label": labels}),
        root / "labelled.parquet",
    )
    captions = [["a red thing", "red"], ["green"], ["a blue thing", "blue", "blue it is"]]
    pq.write_table(
        pa.table({"image": [_png(c) for c in COLOURS.values()], "caption": captions}),
        root / "captioned.parquet",
    )
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    (root / "templates.txt").write_text(TEMPLATES)
    (root / "tasks.toml").write_text(
        '[[task]]\nname = "colours"\nkind = "zeroshot"\nsource = "parquet"\n'
        'path = "labelled.parquet"\nclass_names = "classes.txt"\ntemplates = "templates.txt"\n'
        '[[task]]\nname = "captions"\nkind = "retrieval"\nsource = "parquet"\n'
        'path = "captioned.parquet"\n'
        '[[task]]\nname = "probe"\nkind = "linear_probe"\nsource = "parquet"\n'
        'path = "labelled.parquet"\ntrain_path = "probe_train.parquet"\n'
    )
    train = [0, 1, 2] * 3 + [0] * 3  # class 0 the most common
    pq.write_table(
        pa.table({"image": [_png(COLOURS[names[i]]) for i in train], "label": train}),
        root / "probe_train.parquet",
    )
    return root


def oracle(permute=False, blind=False):
    tokenizer = build_word_tokenizer([*COLOURS, TEMPLATES, "a thing it is"], max_len=8)
    vocab = tokenizer.backend.get_vocab()
    lookup = np.full(len(vocab), -1, np.int32)
    for i, name in enumerate(COLOURS):
        lookup[vocab[name]] = i
    return Oracle(jnp.asarray(lookup), permute, Config(ImageConfig(14, 3)), blind), tokenizer


def test_zero_shot_scores_known_values():
    logits = np.array([[3.0, 1, 0, 0, 0, 0, 0], [1, 2, 2, 0, 0, 0, 0], [0, 0, 5, 1, 1, 1, 1.0]])
    got = zero_shot_scores(logits, np.array([0, 1, 3]))
    # example 1 ties with class 2 (a tie counts against it); example 2 ranks 2nd..5th: rank 4
    assert got == {
        "top1": pytest.approx(1 / 3),
        "top5": 1.0,
        "mean_per_class": pytest.approx(1 / 3),
    }
    assert "top5" not in zero_shot_scores(logits[:, :5], np.array([0, 1, 3]))


def test_retrieval_scores_with_several_captions_per_image():
    # image 0 owns texts 0, 1; image 1 owns text 2
    sim = np.array([[0.1, 0.9, 0.5], [0.8, 0.2, 0.3]])
    got = retrieval_scores(sim, np.array([0, 0, 1]))
    # i2t: image 0's best own text (0.9) beats text 2 (0.5); image 1's own (0.3) loses to 0.8
    assert got["i2t_r1"] == 0.5 and got["i2t_r5"] == 1.0
    # t2i: text 0 prefers image 1 (0.8 > 0.1); text 1 right; text 2: image 0 (0.5) beats 0.3
    assert got["t2i_r1"] == pytest.approx(1 / 3) and got["t2i_r10"] == 1.0


def test_an_oracle_scores_one_and_a_wrong_model_zero(files):
    tasks = load_tasks(files / "tasks.toml")
    model, tokenizer = oracle()
    scores = run_tasks(model, tokenizer, tasks, batch_size=4)
    assert set(scores) == {
        "colours/top1",
        "colours/mean_per_class",
        *(f"captions/{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)),
        "probe/top1",
        "probe/mean_per_class",
        "average",
    }
    assert all(v == 1.0 for v in scores.values()), scores
    wrong = run_tasks(*oracle(permute=True), tasks, batch_size=4)
    assert wrong["colours/top1"] == 0.0 and wrong["captions/i2t_r1"] == 0.0
    assert wrong["probe/top1"] == 1.0  # a probe learns any relabelling of separable features
    blind = run_tasks(*oracle(blind=True), tasks[2:], batch_size=4)
    # constant features: the probe predicts the most common class (0) for all, 3 of 7 labels
    assert blind["probe/top1"] == pytest.approx(3 / 7)
    assert blind["probe/mean_per_class"] == pytest.approx(1 / 3)


def test_aced_eval_with_a_task_file(files, tmp_path, capsys):
    from aced.models import TwoTower, TwoTowerConfig, save_two_tower

    tokenizer = build_word_tokenizer([*COLOURS, TEMPLATES, "a thing it is"], max_len=8)
    config = TwoTowerConfig.from_variants(
        image_variant="mu/7", text_variant="mu", embed_dim=16, image_size=14,
        vocab_size=tokenizer.backend.get_vocab_size(), max_len=8,
    )  # fmt: skip
    model_dir = tmp_path / "model"
    save_tokenizer(tokenizer, tmp_path / "tokenizer.json")
    save_two_tower(
        TwoTower(config, key=jax.random.key(0)),
        model_dir,
        extra_files=[tmp_path / "tokenizer.json"],
    )
    assert cli.main(["eval", str(model_dir), "--tasks", str(files / "tasks.toml")]) == 0
    table = capsys.readouterr().out
    written = json.loads((model_dir / "eval_tasks.json").read_text())["scores"]
    assert f"{100 * written['average']:6.1f}%" in table and "colours/top1" in table
    assert len(written) == 11


def test_bad_task_files_are_named(files, tmp_path):
    bad = tmp_path / "bad.toml"
    with pytest.raises(FileNotFoundError, match="task file"):
        load_tasks(tmp_path / "none.toml")
    bad.write_text('[[task]]\nname = "x"\nkind = "zeroshot"\nsource = "parquet"\npath = "a"\n')
    with pytest.raises(ValueError, match="needs class_names"):
        load_tasks(bad)
    bad.write_text('[[task]]\nname = "x"\nkind = "linear"\nsource = "parquet"\npath = "a"\n')
    with pytest.raises(ValueError, match="kind must be one of"):
        load_tasks(bad)
    model, tokenizer = oracle()
    bad.write_text(
        f'[[task]]\nname = "x"\nkind = "retrieval"\nsource = "parquet"\n'
        f'path = "{files}/missing.parquet"\n'
    )
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        run_tasks(model, tokenizer, load_tasks(bad))
    (tmp_path / "two.txt").write_text("red\ngreen\n")  # labels go up to 2
    (tmp_path / "empty.txt").write_text("\n")
    for names, templates, message in [
        ("two.txt", "", r"labels must be int class ids in \[0, 2\)"),
        (f"{files}/classes.txt", 'templates = "empty.txt"\n', "is empty"),
    ]:
        bad.write_text(
            '[[task]]\nname = "x"\nkind = "zeroshot"\nsource = "parquet"\n'
            f'path = "{files}/labelled.parquet"\nclass_names = "{names}"\n{templates}'
        )
        with pytest.raises(ValueError, match=message):
            run_tasks(model, tokenizer, load_tasks(bad))
    bad.write_text(
        '[[task]]\nname = "x"\nkind = "zeroshot"\nsource = "parquet"\n'
        f'path = "{files}/captioned.parquet"\nclass_names = "two.txt"\n'
    )
    with pytest.raises(ValueError, match="label"):  # the captioned data has no label column
        run_tasks(model, tokenizer, load_tasks(bad))


def test_a_run_is_evaluated_on_its_task_file_during_and_after_training(files, tmp_path):
    run_dir = tmp_path / "run"
    argv = micro_overrides(run_dir, 2, "train.eval_every=1", f"train.eval_tasks={files}/tasks.toml")
    assert cli.main(["train", "--preset", "iid", *argv]) == 0
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in lines if "eval/colours/top1" in r]
    assert [r["step"] for r in evals] == [1, 2]  # every eval_every steps, and at the end
    assert all("flops_cumulative" in r and "eval/captions/t2i_r10" in r for r in evals)
    final = json.loads((run_dir / "eval.json").read_text())["scores"]
    assert final["colours/top1"] == evals[-1]["eval/colours/top1"] and "zeroshot/count" not in final
