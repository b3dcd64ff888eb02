"""LiT-Decoder: CIDEr-D on hand-computed cases, the scene tasks and their scores, and
``aced lit-decoder`` end to end: a frozen tower, resume, bad input."""

import hashlib
import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aced import cli
from aced.data.scene_layouts import SceneConfig
from aced.eval.cider import cider_d
from aced.eval.lit_tasks import (
    DecoderVocab,
    answer_scores,
    build_examples,
    caption_scores,
    parse_caption,
    positional_caption,
    questions,
)
from aced.models import TwoTower, TwoTowerConfig
from aced.train import lit_decoder
from aced.train.checkpoint.model_files import save_model

SCENES = SceneConfig()


def test_cider_d_of_hand_computed_cases():
    # Two images, one reference each: every n-gram is in one image's references, so
    # each weight is log(2) - log(1), and a sentence's length is its number of bigrams.
    # Image 1: the candidate is its reference: n = 1, 2 give 1, n = 3, 4 have no grams.
    # Image 2: "c e" vs "c d": one shared unigram of two (1/2), no shared bigram.
    assert cider_d(["a b", "c e"], [["a b"], ["c d"]]) == pytest.approx(
        [10 * (1 + 1) / 4, 10 * 0.5 / 4]
    )
    # Clipping and the length penalty: "a b a b" against "a b". Unigrams (2w, 2w) vs
    # (w, w): sum min(2w, w) w / (sqrt(8) w sqrt(2) w) = 1/2; bigrams ab:2w, ba:w vs
    # ab:w: w^2 / (sqrt(5) w w); lengths 3 and 1 bigrams: exp(-4 / 72).
    want = 10 * (0.5 + 1 / math.sqrt(5)) * math.exp(-4 / 72) / 4
    assert cider_d(["a b a b", "c d"], [["a b"], ["c d"]])[0] == pytest.approx(want)
    # Several references: the mean over them; a one-image corpus weighs every gram 0.
    two = cider_d(["a b", "c d"], [["a b", "c d"], ["c d"]])[0]
    # "c d" is in both images' references: weight log 2 - log 2 = 0, so that reference
    # has zero norm and scores 0; "a b" scores as above.
    assert two == pytest.approx((5.0 + 0.0) / 2)
    assert cider_d(["a b"], [["a b"]]) == [0.0]
    with pytest.raises(ValueError, match="at least one reference"):
        cider_d(["a"], [[]])
    with pytest.raises(ValueError, match="2 candidates for 1"):
        cider_d(["a", "b"], [["a"]])


layouts = st.lists(st.integers(-1, 9), min_size=4, max_size=4).filter(lambda x: max(x) >= 0)


@given(layouts)
def test_a_positional_caption_states_its_layout(layout):
    assert parse_caption(positional_caption(layout, SCENES), SCENES) == layout


def test_questions_are_answered_by_the_layout():
    layout = [8, -1, 1, 8]  # bag top left, trousers bottom left, bag bottom right
    qs = questions(layout, SCENES, (0.3, 0.1))  # cell 1 (empty); a present class
    assert qs[0] == ("what_at", "what is in the top right ?", "nothing")
    assert qs[1] == ("count", "how many items are there ?", "three")
    assert qs[2][2] == "yes" and qs[2][1] in ("is there a bag ?", "is there a pair of trousers ?")
    qs = questions(layout, SCENES, (0.6, 0.9))  # cell 2; an absent class
    assert qs[0][2] == "a pair of trousers" and qs[2][2] == "no"
    assert "bag" not in qs[2][1] and "trousers" not in qs[2][1]


def test_caption_and_answer_scores_count_items_and_cells():
    layouts = np.array([[8, -1, 1, 8], [0, -1, -1, -1]], np.int8)
    predictions = [
        "a bag in the top left and a bag in the bottom left",  # one right item, one wrong cell
        "a t-shirt in the top left and a coat in the top right",  # right, plus one invented
    ]
    scores = caption_scores(predictions, layouts, SCENES)
    assert scores["item_accuracy"] == pytest.approx(2 / 4)
    # cells right: image 1: top left, top right (empty); image 2: top left, the two
    # empty bottom cells.
    assert scores["cell_accuracy"] == pytest.approx((2 + 3) / 8)
    assert scores["exact_match"] == 0.0
    answers = answer_scores(["yes", "two", "a bag"], ["yes", "three", "a bag"],
                            ["presence", "count", "what_at"])  # fmt: skip
    assert answers == pytest.approx({"exact_match": 2 / 3, "exact_match/what_at": 1.0,
                                     "exact_match/count": 0.0, "exact_match/presence": 1.0})  # fmt: skip


def test_sequences_round_trip_through_the_vocabulary():
    from aced.data.scenes import eval_split

    vocab = DecoderVocab.for_scenes(SCENES)
    split = eval_split(6)
    examples = build_examples(split, SCENES, vocab, seed=0)
    assert len(examples) == 4 * 6 and examples.task[:4] == (
        "caption",
        "what_at",
        "count",
        "presence",
    )
    for tokens, n, target in zip(examples.tokens, examples.prompt_len, examples.target):
        assert vocab.decode(tokens, int(n)) == target
    small = DecoderVocab(tuple(w for w in vocab.words if w != "bag"))
    with pytest.raises(ValueError, match="does not cover the targets.*bag"):
        build_examples(eval_split(40), SCENES, small, seed=0)


# A tiny tower for the built-in 56 px scenes, and a tiny decoder.
def encoder_dir(tmp_path, image_size=56):
    config = TwoTowerConfig.from_variants(
        image_variant="mu/14", text_variant="mu", embed_dim=8, image_size=image_size,
        vocab_size=20, max_len=4,
        image_overrides={"channels": 1, "width": 16, "depth": 1, "mlp_dim": 32},
    )  # fmt: skip
    return save_model(TwoTower(config, key=jax.random.key(0)), tmp_path / f"enc{image_size}")


ARGS = ["--width", "16", "--depth", "1", "--mlp-dim", "32", "--num-heads", "2",
        "--batch-size", "4", "--train-scenes", "16", "--eval-scenes", "3",
        "--eval-batch-size", "4", "--checkpoint-every", "2", "--steps", "4", "--no-progress"]  # fmt: skip


def digest(path) -> str:
    return hashlib.sha256(
        b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())
    ).hexdigest()


def test_lit_decoder_trains_resumes_bitwise_and_leaves_the_encoder_frozen(tmp_path, monkeypatch):
    enc = encoder_dir(tmp_path)
    before = digest(enc)
    whole = tmp_path / "whole"
    assert cli.main(["lit-decoder", "--encoder", str(enc), "--out", str(whole), *ARGS]) == 0
    results = json.loads((whole / lit_decoder.RESULTS_FILE).read_text())
    assert set(results["scores"]) >= {"caption/cider", "caption/item_accuracy",
                                      "caption/cell_accuracy", "vqa/exact_match/count"}  # fmt: skip
    assert digest(enc) == before  # the encoder's files are untouched

    # Stopped after the checkpoint of step 2, then the same command again.
    real, calls = lit_decoder._batch, []

    def stop_at_step_3(config, step, n):
        calls.append(step)
        if step == 2:
            raise KeyboardInterrupt
        return real(config, step, n)

    part = tmp_path / "part"
    monkeypatch.setattr(lit_decoder, "_batch", stop_at_step_3)
    assert cli.main(["lit-decoder", "--encoder", str(enc), "--out", str(part), *ARGS]) != 0
    monkeypatch.setattr(lit_decoder, "_batch", real)
    assert json.loads((part / "checkpoint" / "record.json").read_text())["step"] == 2
    assert cli.main(["lit-decoder", "--encoder", str(enc), "--out", str(part), *ARGS]) == 0
    assert (part / "checkpoint" / "state.eqx").read_bytes() == (
        whole / "checkpoint" / "state.eqx"
    ).read_bytes()
    assert json.loads((part / lit_decoder.RESULTS_FILE).read_text())["scores"] == results["scores"]
    assert not list(tmp_path.glob("*/checkpoint.*"))  # no partial or old checkpoint left

    # No gradient reaches the tower; the decoder's is not zero.
    encoder = lit_decoder.load_encoder(enc)
    vocab = DecoderVocab.for_scenes(SCENES)
    config = lit_decoder.LitConfig(width=16, depth=1, mlp_dim=32, num_heads=2)
    decoder = lit_decoder.TextDecoder(lit_decoder.decoder_config(config, vocab, 43, encoder),
                                      key=jax.random.key(0))  # fmt: skip
    images = jax.random.normal(jax.random.key(1), (2, 56, 56, 1))
    tokens = jnp.tile(jnp.arange(3, 46)[None] % vocab.size, (2, 1)).astype(jnp.int32)
    prompt_len = jnp.array([3, 0])
    # jit: one program each, not one per operation
    grads = eqx.filter_jit(
        eqx.filter_grad(lambda d, e: lit_decoder.batch_loss(d, e, images, tokens, prompt_len))
    )(decoder, encoder)
    enc_grads = eqx.filter_jit(
        eqx.filter_grad(lambda e, d: lit_decoder.batch_loss(d, e, images, tokens, prompt_len))
    )(encoder, decoder)
    assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(enc_grads))
    assert any(np.any(np.asarray(g)) for g in jax.tree.leaves(grads))


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    def run(*argv):
        code = cli.main(["lit-decoder", "--out", str(tmp_path / "out"), *ARGS, *argv])
        return code, capsys.readouterr().err

    (tmp_path / "empty").mkdir()
    code, err = run("--encoder", str(tmp_path / "empty"))
    assert code == 2 and "holds no image tower" in err
    code, err = run("--encoder", str(encoder_dir(tmp_path, image_size=28)))
    assert code == 2 and "takes 28x28 images but the scenes are 56x56" in err
    words = tmp_path / "words.txt"
    words.write_text("a\nbag\nin\nthe\n")
    code, err = run("--encoder", str(encoder_dir(tmp_path)), "--vocab", str(words))
    assert code == 2 and "does not cover the targets" in err and "--vocab" in err
    code, err = run("--encoder", str(encoder_dir(tmp_path)), "--beam", "0")
    assert code == 2 and "--beam must be >= 1" in err
