"""A converted transformers SigLIP as the reference of `aced train`, with inputs unlike the learner's.

The reference reads 32px RGB images and its own sentencepiece captions of 8
tokens; the learner reads the built-in 56px grey scenes with the word
tokenizer (12 tokens). With cached embeddings the run embeds every example
once through the reference's own pipeline, and those rows must be what
transformers itself computes.
"""

import math

import numpy as np
import pytest
from test_hf_siglip import MAX_LEN, hf_config_dict, train_sentencepiece
from test_loop import ACED, micro_overrides, records

from aced.convert import convert_hf_siglip
from aced.train import embedding_cache, loop
from aced.train.config import apply_overrides, preset
from aced.train.inputs import build_source
from aced.train.reference import check_reference, reference_tokenizer

IMAGE, PATCH = 32, 8


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_dir, out = tmp_path_factory.mktemp("hf"), tmp_path_factory.mktemp("ref") / "aced"
    config = hf_config_dict()
    config["vision_config"].update(image_size=IMAGE, patch_size=PATCH)
    torch.manual_seed(0)
    model = transformers.SiglipModel(
        transformers.SiglipConfig(**{k: v for k, v in config.items() if k != "model_type"})
    ).eval()
    model.save_pretrained(hf_dir, safe_serialization=True)
    train_sentencepiece(hf_dir / "spiece.model")
    hf_tokenizer = transformers.SiglipTokenizer(vocab_file=str(hf_dir / "spiece.model"))
    hf_tokenizer.save_pretrained(hf_dir)
    convert_hf_siglip(hf_dir, out)
    return out, model, hf_tokenizer


def hf_run(out_dir, reference, embeddings):
    return apply_overrides(
        preset("acid"),
        micro_overrides(
            out_dir,
            2,
            *ACED,
            f"reference.path={reference}",
            f"step.reference_embeddings={embeddings}",
        ),
    )


def test_cached_reference_with_its_own_inputs(converted, tmp_path, monkeypatch):
    import torch

    reference, hf_model, hf_tokenizer = converted
    caches = []

    def recording(*args, **kwargs):
        caches.append(cache_embeddings(*args, **kwargs))
        return caches[-1]

    cache_embeddings = embedding_cache.cache_reference_embeddings  # where `train` looks it up
    monkeypatch.setattr(embedding_cache, "cache_reference_embeddings", recording)
    run = hf_run(tmp_path / "run", reference, "cached")
    assert (run.model.image_size, run.model.channels, run.model.max_len) == (56, 1, 12)
    result = loop.train(run)

    assert result["step"] == 2 and not result["interrupted"]
    losses = [v for r in records(tmp_path / "run") for k, v in r.items() if k.startswith("loss/")]
    assert losses and all(math.isfinite(v) for v in losses)

    ((zimg, ztxt),) = caches
    source = build_source(run.data)
    assert zimg.shape == ztxt.shape == (len(source), 24)
    # The truth: transformers' model on SiglipImageProcessor-scaled RGB images of the
    # reference's size and its own tokenizer's ids.
    ids = np.array([0, 7, 100, 255])
    loaded = source.load(ids, IMAGE, 3)  # (4, 32, 32, 3) uint8, grey repeated
    pixels = torch.tensor(loaded.images.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0)
    tokens = hf_tokenizer(
        loaded.captions, padding="max_length", max_length=MAX_LEN, truncation=True
    )
    with torch.no_grad():
        out = hf_model(pixel_values=pixels, input_ids=torch.tensor(tokens["input_ids"]))
    np.testing.assert_allclose(zimg[ids], out.image_embeds.numpy(), atol=1e-4)
    np.testing.assert_allclose(ztxt[ids], out.text_embeds.numpy(), atol=1e-4)
    # Examples 0 and 255 differ in image and in token ids, and so in both embeddings:
    # the comparison has teeth.
    assert tokens["input_ids"][0] != tokens["input_ids"][3]
    assert np.abs(zimg[0] - zimg[255]).max() > 1e-3 and np.abs(ztxt[0] - ztxt[255]).max() > 1e-3


def test_online_reference_with_other_inputs_is_refused(converted, tmp_path):
    reference, _, _ = converted
    with pytest.raises(
        ValueError, match=r"reads 32px images with 3 channel.*step.reference_embeddings=cached"
    ):
        loop.train(hf_run(tmp_path / "run", reference, "online"))


def test_reference_tokenizer_and_width_checks(converted, tmp_path):
    import shutil

    from aced.data import builtin_tokenizer, load_hf_tokenizer
    from aced.train.checkpoint import load_model

    reference, _, _ = converted
    model = load_model(reference)
    learner = apply_overrides(preset("acid"), micro_overrides(tmp_path, 2, *ACED)).model.two_tower(
        vocab_size=62, max_len=12
    )
    check_reference(
        model.config, learner, width=None, origin="r", cached=True
    )  # other inputs: fine
    with pytest.raises(ValueError, match=r"width 24, not reference.embed_dim=16"):
        check_reference(model.config, learner, width=16, origin="r", cached=True)
    captions = ["an image of a sandal", "a shirt in the top right"]
    own = reference_tokenizer(model, str(reference), builtin_tokenizer(max_len=12))
    np.testing.assert_array_equal(
        own(captions), load_hf_tokenizer(reference, max_len=MAX_LEN)(captions)
    )
    # Weights without tokenizer files: the learner's tokenizer, if it fits.
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(reference / name, bare / name)
    short = builtin_tokenizer(max_len=MAX_LEN)
    assert reference_tokenizer(model, str(bare), short) is short
    with pytest.raises(
        ValueError, match=r"captions of 12\) does not fit its text tower \(80 tokens, at most 8\)"
    ):
        reference_tokenizer(model, str(bare), builtin_tokenizer(max_len=12))
