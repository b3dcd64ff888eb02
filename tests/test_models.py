"""Model layer: variants, ViT, text tower, two-tower."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aced.models import (
    TextConfig,
    TwoTower,
    TwoTowerConfig,
    ViTConfig,
    decode_variant,
)
from aced.models.serialization import arrays_to_tree, load_two_tower, save_two_tower, tree_to_arrays
from aced.models.transformer import MultiheadAttention
from aced.models.vit import patchify, posemb_sincos_2d

VOCAB, MAX_LEN = 50, 8


def small_config(**image_overrides) -> TwoTowerConfig:
    return TwoTowerConfig.from_variants(
        image_variant="mu/7",
        text_variant="mu",
        embed_dim=32,
        image_size=28,
        vocab_size=VOCAB,
        max_len=MAX_LEN,
        image_overrides=image_overrides,
    )


@eqx.filter_jit
def embed(model, images, tokens):
    return model.embed_images(images), model.embed_texts(tokens)


@eqx.filter_jit
def logits(model, images, tokens):
    return model.logits(images, tokens)


@pytest.fixture(scope="module")
def model():
    return TwoTower(small_config(), key=jax.random.key(0))


def batch(key, n=3):
    ikey, tkey = jax.random.split(key)
    images = jax.random.normal(ikey, (n, 28, 28, 3), jnp.float32)
    tokens = jax.random.randint(tkey, (n, MAX_LEN), 0, VOCAB, jnp.int32)
    return images, tokens


def test_decode_variant_table():
    assert decode_variant("S/16") == {
        "width": 384,
        "depth": 12,
        "mlp_dim": 1536,
        "num_heads": 6,
        "patch_size": 16,
    }
    assert decode_variant("So400m/14") == {
        "width": 1152,
        "depth": 27,
        "mlp_dim": 4304,
        "num_heads": 16,
        "patch_size": 14,
    }
    assert decode_variant("B") == {"width": 768, "depth": 12, "mlp_dim": 3072, "num_heads": 12}
    assert decode_variant("mu/7")["patch_size"] == 7
    for name in ("Ti/16", "L/16", "g/14", "nano/4", "micro/4"):
        params = decode_variant(name)
        assert params["width"] % params["num_heads"] == 0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: decode_variant("XL/16"), "unknown variant"),
        (lambda: decode_variant("S/x"), "patch size"),
        (lambda: ViTConfig.from_variant("mu/7", image_size=30), "not divisible by patch_size"),
        (lambda: ViTConfig.from_variant("mu", image_size=28), "names no patch size"),
        (lambda: ViTConfig.from_variant("mu/7", image_size=28, num_heads=3), "num_heads"),
        (lambda: ViTConfig.from_variant("mu/7", image_size=28, pool="cls"), "pool="),
        (lambda: ViTConfig.from_variant("mu/7", image_size=28, depth=0), "depth=0"),
        (lambda: TextConfig.from_variant("mu/7", vocab_size=9, max_len=4), "patch size"),
        (lambda: TextConfig.from_variant("mu", vocab_size=9, max_len=4, pool="cls"), "pool="),
        (
            lambda: TwoTowerConfig(
                image=ViTConfig.from_variant("mu/7", image_size=28, out_dim=32),
                text=TextConfig.from_variant("mu", vocab_size=9, max_len=4, out_dim=16),
            ),
            "same embedding width",
        ),
    ],
)
def test_bad_configs_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_config_dict_round_trip():
    config = small_config(pool="gap", posemb="sincos2d")
    assert TwoTowerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="TwoTowerConfig.to_dict"):
        TwoTowerConfig.from_dict({"image": {}})


def test_patchify_matches_reshape():
    image = np.arange(6 * 4 * 2, dtype=np.float32).reshape(6, 4, 2)
    p = 2
    # (h p1) (w p2) c -> h w p1 p2 c -> (h w) (p1 p2 c), by hand.
    expected = image.reshape(3, p, 2, p, 2).transpose(0, 2, 1, 3, 4).reshape(6, p * p * 2)
    np.testing.assert_array_equal(patchify(jnp.asarray(image), p), expected)
    # Patch (row 1, col 0) starts at pixel (2, 0).
    np.testing.assert_array_equal(patchify(jnp.asarray(image), p)[2, :2], image[2, 0])


def test_posemb_sincos_known_values():
    pe = np.asarray(posemb_sincos_2d(2, 3, 8))
    assert pe.shape == (6, 8)
    # Omega = [1, 1e-4]; columns are [sin x, cos x, sin y, cos y] per omega.
    np.testing.assert_allclose(pe[0], [0, 0, 1, 1, 0, 0, 1, 1], atol=1e-7)
    # Row-major grid: index 4 is (y=1, x=1), index 2 is (y=0, x=2).
    np.testing.assert_allclose(
        pe[2, :4], [math.sin(2), math.sin(2e-4), math.cos(2), math.cos(2e-4)], rtol=1e-6
    )
    np.testing.assert_allclose(pe[2, 4:], [0, 0, 1, 1], atol=1e-7)
    np.testing.assert_allclose(
        pe[4, 4:], [math.sin(1), math.sin(1e-4), math.cos(1), math.cos(1e-4)], rtol=1e-6
    )


def test_attention_matches_plain_reference(getkey):
    attention = MultiheadAttention(16, 4, key=getkey())
    queries = jax.random.normal(getkey(), (3, 16), jnp.float32)
    inputs = jax.random.normal(getkey(), (5, 16), jnp.float32)

    def project(linear, x):
        return (x @ linear.weight.T + linear.bias[None, :]).reshape(x.shape[0], 4, 4)

    pairs = [(attention.q_proj, queries), (attention.k_proj, inputs), (attention.v_proj, inputs)]
    q, k, v = (project(lin, x) for lin, x in pairs)
    heads = jax.nn.dot_product_attention(q, k, v).reshape(3, 16)
    expected = heads @ attention.out_proj.weight.T + attention.out_proj.bias[None, :]
    np.testing.assert_allclose(attention(queries, inputs), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("overrides", [{}, {"pool": "gap", "posemb": "sincos2d"}])
def test_two_tower_shapes_norms_and_init(getkey, model, overrides):
    if overrides:
        model = TwoTower(small_config(**overrides), key=getkey())
    images, tokens = batch(getkey())
    zimg, ztxt = embed(model, images, tokens)
    assert zimg.shape == ztxt.shape == (3, 32)
    np.testing.assert_allclose(jnp.linalg.norm(zimg, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(ztxt, axis=1), 1.0, rtol=1e-5)
    assert float(model.temperature) == pytest.approx(10.0)
    assert float(model.bias) == -10.0
    expected = 10.0 * zimg @ ztxt.T - 10.0
    np.testing.assert_allclose(logits(model, images, tokens), expected, rtol=1e-5, atol=1e-5)
    assert (model.image.map_head is None) == (overrides.get("pool") == "gap")
    assert (model.image.pos_embedding is None) == ("posemb" in overrides)


def test_batched_equals_per_example(getkey, model):
    images, tokens = batch(getkey())
    zimg, ztxt = embed(model, images, tokens)
    image_tower, text_tower = eqx.filter_jit(model.image), eqx.filter_jit(model.text)
    for i in range(3):
        single = image_tower(images[i])
        np.testing.assert_allclose(zimg[i], single / jnp.linalg.norm(single), rtol=1e-5, atol=1e-6)
        single = text_tower(tokens[i])
        np.testing.assert_allclose(ztxt[i], single / jnp.linalg.norm(single), rtol=1e-5, atol=1e-6)


def test_scan_and_unrolled_layers_agree(getkey, model):
    images, tokens = batch(getkey(), n=2)
    scanned = model
    unrolled_config = TwoTowerConfig(
        image=ViTConfig(**{**scanned.config.image.__dict__, "scan_layers": False}),
        text=TextConfig(**{**scanned.config.text.__dict__, "scan_layers": False}),
    )
    # The fixture's key: same weights, only the static config differs.
    unrolled = TwoTower(unrolled_config, key=jax.random.key(0))
    assert jnp.array_equal(
        unrolled.image.blocks.mlp.fc1.weight, scanned.image.blocks.mlp.fc1.weight
    )
    np.testing.assert_allclose(
        logits(scanned, images, tokens), logits(unrolled, images, tokens), rtol=1e-5, atol=1e-5
    )


def test_blocks_have_distinct_keys(model):
    vit = model.image
    for weights in (vit.blocks.attention.q_proj.weight, vit.blocks.mlp.fc1.weight):
        assert weights.shape[0] == 2
        assert not np.allclose(weights[0], weights[1])


def test_text_tower_is_bidirectional_and_accepts_short_rows(model):
    encoder = model.text
    run = eqx.filter_jit(encoder)
    tokens = jnp.arange(MAX_LEN, dtype=jnp.int32)
    changed_first = tokens.at[0].set(VOCAB - 1)
    # Last-token pooling still sees the first token: no causal mask.
    assert not np.allclose(run(tokens), run(changed_first))
    assert run(tokens[:5]).shape == (32,)
    with pytest.raises(ValueError, match="max_len"):
        encoder(jnp.zeros((MAX_LEN + 1,), jnp.int32))


def test_wrong_image_size_raises(model):
    with pytest.raises(ValueError, match="does not match"):
        model.image(jnp.zeros((21, 21, 3), jnp.float32))


def test_jitted_embed_compiles_once(getkey, model):
    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def embed(model, images, tokens):
        return model.embed_images(images), model.embed_texts(tokens)

    for _ in range(3):
        images, tokens = batch(getkey())
        embed(model, images, tokens)


def test_save_load_round_trip_is_exact_and_atomic(model, tmp_path):
    out = save_two_tower(model, tmp_path / "model")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert eqx.tree_equal(load_two_tower(out), model)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_two_tower(model, out)
    save_two_tower(model, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporaries left


def test_arrays_round_trip_keys_and_reject_mismatches(model):
    tree = {"key": jax.random.split(jax.random.key(3), 2), "x": jnp.arange(3.0)}
    skeleton = jax.eval_shape(lambda: tree)
    restored = arrays_to_tree(skeleton, tree_to_arrays(tree))
    assert jnp.array_equal(jax.random.key_data(restored["key"]), jax.random.key_data(tree["key"]))
    assert jnp.array_equal(restored["x"], tree["x"])
    arrays = tree_to_arrays(model)
    assert arrays["image.blocks.mlp.fc1.weight"].shape == (2, 256, 64)
    with pytest.raises(ValueError, match="missing"):
        arrays_to_tree(model, {k: v for k, v in arrays.items() if k != "bias"})
    with pytest.raises(ValueError, match="shape"):
        arrays_to_tree(model, {**arrays, "bias": np.zeros(2, np.float32)})
