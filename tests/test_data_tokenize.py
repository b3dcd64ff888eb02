"""Tokenizers: the built-in word vocabulary covers every caption and prompt,
rows end in <eos> at the pooled (last) position, files round-trip."""

import re

import numpy as np
import pytest
import tokenizers
from data.fmnist_fixture import write_fake_fashion_mnist
from tokenizers import models, pre_tokenizers

from aced.data import captions as cap
from aced.data.hf_tokenizer import load_sentencepiece
from aced.data.scenes import SceneConfig, curated_split, eval_split, web_split
from aced.data.tokenize import (
    EOS,
    PAD,
    UNK,
    build_word_tokenizer,
    builtin_tokenizer,
    load_tokenizer,
    save_tokenizer,
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=300, n_test=300)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]+", text.lower())


def test_builtin_vocabulary_covers_all_captions_and_prompts(data_dir):
    from aced.eval import build_suite

    tok = builtin_tokenizer()
    suite = build_suite(per_task=20, retrieval_size=20, data_dir=data_dir)
    texts = list(curated_split(500, data_dir=data_dir).captions) + list(
        web_split(500, data_dir=data_dir).captions
    )
    texts += list(eval_split(200, data_dir=data_dir).captions) + [
        t for s in suite.prompt_sets for t in s
    ]
    ids = tok(texts)
    assert ids.dtype == np.int32 and ids.shape == (len(texts), tok.max_len)
    assert not (ids == tok.backend.token_to_id(UNK)).any()
    assert (ids[:, -1] == tok.eos_id).all()  # the pooled position holds <eos>
    for row, text in zip(ids[:50], texts[:50]):
        real = np.flatnonzero(row != tok.pad_id)
        assert (
            real.size == len(_words(text)) + 1 and real[0] == tok.max_len - real.size
        )  # left padding, contiguous
        assert tok.decode(row).split() == _words(text)


def test_max_caption_tokens_is_a_tight_bound():
    config = SceneConfig()
    wide = builtin_tokenizer(config, max_len=100)
    positions = cap.position_names(2, 2)
    rng = np.random.default_rng(0)
    layouts = rng.integers(-1, 10, size=(3000, 4))
    layouts[:, 0] = rng.integers(0, 10, size=3000)
    texts = cap.describe_all(layouts, 2, 2, rng)
    lengths = (wide(texts) != wide.pad_id).sum(1)
    assert lengths.max() <= config.max_caption_tokens
    longest = "an image with " + cap.join_phrases(
        [f"a pair of trousers in the {p}" for p in positions]
    )
    assert (wide([longest]) != wide.pad_id).sum() == config.max_caption_tokens
    assert builtin_tokenizer(config).max_len == config.max_caption_tokens


def test_truncation_keeps_eos_and_right_padding():
    left = build_word_tokenizer(["a b c d e"], max_len=4)
    right = build_word_tokenizer(["a b c d e"], max_len=4, padding_side="right")
    v = left.backend.get_vocab()
    assert [v[PAD], v[EOS], v[UNK]] == [0, 1, 2]
    np.testing.assert_array_equal(left(["a b c d e"]), [[v["a"], v["b"], v["c"], v[EOS]]])
    np.testing.assert_array_equal(left(["B zz"]), [[v[PAD], v["b"], v[UNK], v[EOS]]])
    np.testing.assert_array_equal(right(["b"]), [[v["b"], v[EOS], v[PAD], v[PAD]]])
    with pytest.raises(TypeError, match="list of texts"):
        left("a b")
    with pytest.raises(ValueError, match="max_len"):
        build_word_tokenizer(["a"], max_len=1)


def test_save_and_load_round_trip(tmp_path):
    tok = builtin_tokenizer()
    path = save_tokenizer(tok, tmp_path)
    assert path.name == "tokenizer.json"
    again = load_tokenizer(path)
    texts = ["two bags and a shirt", "an ankle boot in the top left", "a photo of four items"]
    np.testing.assert_array_equal(again(texts), tok(texts))
    assert (again.max_len, again.pad_id, again.eos_id, again.padding_side) == (
        tok.max_len,
        0,
        1,
        "left",
    )
    shorter = load_tokenizer(tmp_path, max_len=5, padding_side="right")
    row = shorter(["a bag"])[0]
    v = tok.backend.get_vocab()
    np.testing.assert_array_equal(row, [v["a"], v["bag"], v[EOS], v[PAD], v[PAD]])


def test_load_foreign_tokenizer_json(tmp_path):
    vocab = {"[PAD]": 0, "[UNK]": 1, "hello": 2, "world": 3}
    foreign = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    foreign.pre_tokenizer = pre_tokenizers.Whitespace()
    foreign.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="max_len"):
        load_tokenizer(tmp_path)
    tok = load_tokenizer(tmp_path / "tokenizer.json", max_len=4)
    np.testing.assert_array_equal(tok(["hello world", "world"]), [[2, 3, 0, 0], [3, 0, 0, 0]])
    assert tok.vocab_size == 4 and tok.eos_id is None

    del vocab["[PAD]"]
    nopad = tokenizers.Tokenizer(
        models.WordLevel({k: i for i, k in enumerate(vocab)}, unk_token="[UNK]")
    )
    nopad.save(str(tmp_path / "nopad.json"))
    with pytest.raises(ValueError, match="pad token"):
        load_tokenizer(tmp_path / "nopad.json", max_len=4)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_tokenizer(tmp_path / "missing.json", max_len=4)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        load_tokenizer(tmp_path / "broken.json", max_len=4)


def test_sentencepiece_model(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n".join(["a bag in the top left", "two shirts and a coat", "a photo of a dress"] * 50)
    )
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(tmp_path / "sp"),
        vocab_size=24,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
    )
    tok = load_sentencepiece(tmp_path / "sp.model", max_len=12)
    ids = tok(["a bag", "two shirts and a coat in the top left of a photo of a dress"])
    assert ids.shape == (2, 12)
    assert ids[0].tolist().index(1) == len(tok.backend.encode("a bag"))  # pieces, </s>, pads
    assert ids[1, -1] == 1  # truncated rows keep </s> last
