"""``aced tokenizer build``: word and BPE tokenizers from a dataset's captions and extra texts."""

import io

import numpy as np
import pytest
from PIL import Image

from aced import cli
from aced.data.tokenize import EOS, PAD, UNK, load_tokenizer
from aced.data.tokenizer_build import build, length_coverage, prompt_texts, train_tokenizer

CAPTIONS = [
    "a red tulip in a vase",
    "two brown dogs on the grass",
    "a handwritten seven",
    "the seven of spades, upside down",
    "a dog",
] * 4 + ["an unusually long caption that mentions a red dog and a brown tulip twice"]


def _png() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("data") / "train.parquet"
    pq.write_table(pa.table({"jpg": [_png()] * len(CAPTIONS), "text": CAPTIONS}), path)
    return path


def test_word_tokenizer_covers_its_captions_and_the_prompts(tmp_path):
    prompts = prompt_texts(["zebra", "okapi"], ["a photo of a {}.", "{} in the wild"])
    assert prompts[:2] == ["a photo of a zebra.", "zebra in the wild"] and len(prompts) == 4
    done = build(CAPTIONS, tmp_path, extra_texts=prompts, progress=False)
    tokenizer = load_tokenizer(done["path"])
    vocab = tokenizer.backend.get_vocab()
    assert {PAD, EOS, UNK, "tulip", "zebra", "okapi", ","} <= set(vocab)
    rows = tokenizer([*CAPTIONS, *prompts])
    assert rows.shape == (len(CAPTIONS) + len(prompts), done["max_len"])
    assert not (rows == vocab[UNK]).any()  # every training text is in the vocabulary
    # L defaults to the longest caption: "an unusually long ... twice" is 14 words + <eos>
    assert done["max"] == done["max_len"] == 15
    assert done["p99"] <= done["max"]


def test_length_coverage_known_values():
    backend = train_tokenizer(["a b c", "a", "a b"], progress=False)
    assert length_coverage(backend, ["a", "a b", "a b c"]) == {"p99": 4, "max": 4}
    texts = ["a"] * 99 + ["a b c"]  # 99 % fit in 2 tokens ("a", <eos>), the last needs 4
    assert length_coverage(backend, texts) == {"p99": 2, "max": 4}
    assert length_coverage(backend, texts[1:]) == {"p99": 4, "max": 4}  # 98 of 99 is < 99 %


def test_bpe_respects_its_vocabulary_size(tmp_path):
    done = build(CAPTIONS, tmp_path / "bpe.json", kind="bpe", vocab_size=60, progress=False)
    assert done["vocab_size"] <= 60
    tokenizer = load_tokenizer(done["path"])
    rows = tokenizer(["a red dog", "zzz unseen"])
    assert rows.shape == (2, done["max_len"])
    # subwords: a word never seen is still spelled from seen pieces where it can be
    assert tokenizer.backend.decode(list(rows[0])).replace(" ", "") == "areddog"


def test_cli_builds_from_parquet_captions(parquet, tmp_path, capsys):
    out = tmp_path / "tok"
    argv = ["tokenizer", "build", "--out", str(out), "--no-progress", "--max-len", "12"]
    argv += ["data.source=parquet", f"data.path={parquet}", "data.image_column=jpg"]
    argv += ["data.caption_column=text"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{len(CAPTIONS)} captions" in printed and "padded to L = 12" in printed
    assert f"data.tokenizer={out / 'tokenizer.json'} model.max_len=12" in printed
    assert load_tokenizer(out / "tokenizer.json")(["a dog"]).shape == (1, 12)


def test_cli_names_bad_input(parquet, tmp_path, capsys):
    base = ["tokenizer", "build", "--out", str(tmp_path / "t.json"), "--no-progress"]
    data = ["data.source=parquet", f"data.path={parquet}", "data.image_column=jpg"]
    assert cli.main([*base, *data]) == 2  # the caption column is "text", not "caption"
    assert "data.caption_column=" in capsys.readouterr().err
    assert cli.main([*base, *data, "data.caption_column=text", "train.steps=3"]) == 2
    assert "only data.* fields" in capsys.readouterr().err
    assert cli.main([*base, "--class-names", "x.txt", *data]) == 2
    assert "--templates" in capsys.readouterr().err
    names = tmp_path / "names.txt"
    names.write_text("zebra\n")
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo\n")
    argv = [*base, "--class-names", str(names), "--templates", str(templates), *data]
    assert cli.main([*argv, "data.caption_column=text"]) == 2
    assert "has no {} for the class name" in capsys.readouterr().err
    argv = [*base, "--extra-texts", str(tmp_path / "none.txt"), *data, "data.caption_column=text"]
    assert cli.main(argv) == 1
    assert "none.txt does not exist" in capsys.readouterr().err
