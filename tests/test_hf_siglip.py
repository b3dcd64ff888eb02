"""Hugging Face SigLIP import, checked against transformers itself.

A tiny randomly initialised ``transformers.SiglipModel`` (every parameter
perturbed, so no zero bias or unit LayerNorm hides a wrong mapping) is saved
offline, converted, and compared with transformers' own outputs; the
tokenizer is compared with transformers' ``SiglipTokenizer`` built on a
sentencepiece model trained in the test.
"""

import io
import json
import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

from aced.convert import convert_hf_siglip, load_two_tower
from aced.data import load_hf_tokenizer
from aced.models import from_hf_siglip
from aced.models.hf_siglip import hf_siglip_config

VOCAB, MAX_LEN, IMAGE, PATCH = 80, 8, 16, 4
CAPTIONS = [
    "A photo of a Cat.",
    "x </s> y",
    "",
    "</s>",
    "  Multiple   spaces\tand\nnewlines ",
    "Ünïcödé ñ 日本",
    "a\u2581b",
    "the quick brown fox jumps over the lazy dog twice over and over again",
    "<unk> hi",
    "end</s>",
    "don't!? (really)",
]
CORPUS = [
    "a photo of a cat",
    "a photo of a dog",
    "the quick brown fox jumps over the lazy dog",
    "two cats sitting on a red sofa",
    "an aerial view of a city at night",
    "hello world",
] * 20


def hf_config_dict():
    return {
        "model_type": "siglip",
        "text_config": {
            "vocab_size": VOCAB,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": MAX_LEN,
            "projection_size": 24,
        },
        "vision_config": {
            "hidden_size": 24,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE,
            "patch_size": PATCH,
        },
    }


def train_sentencepiece(path):
    spm = pytest.importorskip("sentencepiece")
    model = io.BytesIO()
    # SigLIP's special ids: pad 0, eos 1, unk 2, no bos.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=model,
        vocab_size=VOCAB,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    directory = tmp_path_factory.mktemp("hf_siglip")
    torch.manual_seed(0)
    model = transformers.SiglipModel(
        transformers.SiglipConfig(
            **{k: v for k, v in hf_config_dict().items() if k != "model_type"}
        )
    ).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = 0.3 * torch.randn_like(param)
            param.copy_((1.0 + noise) if "norm" in name and name.endswith("weight") else noise)
        model.logit_scale.fill_(math.log(7.0))
        model.logit_bias.fill_(-3.0)
    model.save_pretrained(directory, safe_serialization=True)
    train_sentencepiece(directory / "spiece.model")
    transformers.SiglipTokenizer(vocab_file=str(directory / "spiece.model")).save_pretrained(
        directory
    )
    return directory, model


@eqx.filter_jit
def embed(model, images, tokens):
    return model.embed_images(images), model.embed_texts(tokens), model.logits(images, tokens)


def test_embeddings_and_logits_match_transformers(hf_checkpoint):
    import torch

    directory, hf_model = hf_checkpoint
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((3, 3, IMAGE, IMAGE)).astype(np.float32)  # NCHW
    ids = rng.integers(0, VOCAB, (3, MAX_LEN))
    with torch.no_grad():
        out = hf_model(input_ids=torch.tensor(ids), pixel_values=torch.tensor(pixels))
    model = from_hf_siglip(directory)
    zimg, ztxt, logits = embed(
        model, jnp.asarray(pixels.transpose(0, 2, 3, 1)), jnp.asarray(ids, jnp.int32)
    )
    np.testing.assert_allclose(zimg, out.image_embeds.numpy(), atol=1e-4)
    np.testing.assert_allclose(ztxt, out.text_embeds.numpy(), atol=1e-4)
    np.testing.assert_allclose(logits, out.logits_per_image.numpy(), atol=1e-4)
    assert float(model.temperature) == pytest.approx(7.0)
    assert float(model.bias) == pytest.approx(-3.0)
    # The logits are not trivially small: the comparison above has teeth.
    assert np.abs(out.logits_per_image.numpy()).max() > 0.5


def test_convert_round_trip_carries_tokenizer(hf_checkpoint, tmp_path):
    directory, _ = hf_checkpoint
    out = convert_hf_siglip(directory, tmp_path / "aced")
    assert eqx.tree_equal(load_two_tower(out), from_hf_siglip(directory))
    assert json.loads((out / "config.json").read_text())["text"]["out_dim"] == 24
    np.testing.assert_array_equal(
        load_hf_tokenizer(out)(CAPTIONS), load_hf_tokenizer(directory)(CAPTIONS)
    )
    with pytest.raises(FileExistsError, match="overwrite=True"):
        convert_hf_siglip(directory, out)
    convert_hf_siglip(directory, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aced"]  # no temporary left


@pytest.mark.parametrize("max_len", [None, 10])
def test_sentencepiece_tokenizer_matches_transformers(hf_checkpoint, max_len):
    import transformers

    directory, _ = hf_checkpoint
    reference = transformers.SiglipTokenizer.from_pretrained(directory)
    ours = load_hf_tokenizer(directory, max_len=max_len)
    length = 64 if max_len is None else max_len  # SiglipTokenizer's model_max_length
    assert ours.max_len == length
    with pytest.warns(UserWarning, match="already has"):  # the captions ending in </s>
        expected = reference(CAPTIONS, padding="max_length", truncation=True, max_length=length)
    np.testing.assert_array_equal(ours(CAPTIONS), np.asarray(expected.input_ids, np.int32))


def test_tokenizer_json_matches_transformers_fast(tmp_path):
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    words = sorted({w for line in CORPUS for w in line.split()})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = tokenizers.normalizers.Lowercase()
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    backend.post_processor = tokenizers.processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(tmp_path)
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = load_hf_tokenizer(tmp_path, max_len=6)
    expected = reference(CAPTIONS, padding="max_length", truncation=True, max_length=6)
    np.testing.assert_array_equal(ours(CAPTIONS), np.asarray(expected.input_ids, np.int32))


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: c.update(model_type="siglip2"), "only transformers 'siglip'"),
        (lambda c: c["vision_config"].update(hidden_act="gelu"), "hidden_act='gelu'"),
        (lambda c: c["vision_config"].update(vision_use_head=False), "vision_use_head"),
        (lambda c: c["vision_config"].update(image_size=[16, 32]), "not square"),
        (lambda c: c["text_config"].update(projection_size=16), "projection_size=16"),
    ],
)
def test_unsupported_configs_are_refused(edit, match):
    config = hf_config_dict()
    edit(config)
    with pytest.raises(ValueError, match=match):
        hf_siglip_config(config)


def test_defaults_follow_transformers():
    config = hf_siglip_config({"model_type": "siglip"})  # siglip-base-patch16-224 style
    assert (config.image.width, config.image.depth, config.image.patch_size) == (768, 12, 16)
    assert (config.text.vocab_size, config.text.max_len, config.embed_dim) == (32000, 64, 768)


def test_missing_safetensors_is_explained(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(hf_config_dict()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="never unpickles"):
        from_hf_siglip(tmp_path)
