"""Flexi scoring: the learner scores the super-batch at a lower image resolution."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from step_problem import B, step_config, tiny_batch, tiny_config, tiny_models

from aced.flops import flexi_config
from aced.models import TwoTowerConfig, ViT, ViTConfig
from aced.models.vit import resample_posemb
from aced.train.config import SelectionConfig, apply_overrides, preset
from aced.train.curation import learner_view, scoring_images
from aced.train.sharding import default_mesh
from aced.train.step import step_flops


def test_resample_posemb_keeps_its_grid_and_constant_embeddings():
    posemb = jax.random.normal(jax.random.key(0), (16, 8))
    assert resample_posemb(posemb, 4) is posemb
    constant = jnp.tile(jnp.arange(8.0), (64, 1))
    want = jnp.tile(jnp.arange(8.0), (16, 1))
    np.testing.assert_allclose(resample_posemb(constant, 4), want, rtol=1e-6)
    with pytest.raises(ValueError, match="square grid"):
        resample_posemb(jnp.ones((15, 8)), 2)


@pytest.mark.parametrize("posemb", ["learn", "sincos2d"])
def test_flexi_forward_is_the_small_vit_with_resampled_position_embeddings(posemb):
    small_tower = {"width": 16, "depth": 1, "mlp_dim": 32, "num_heads": 2}
    big = ViTConfig.from_variant("mu/7", image_size=28, channels=1, posemb=posemb, **small_tower)
    small = dataclasses.replace(big, image_size=14)
    vit = ViT(big, key=jax.random.key(0))
    image = jax.random.normal(jax.random.key(1), (14, 14, 1))
    # The same weights in a ViT built for 14 px, its position embeddings resampled by hand.
    skeleton = jax.tree.structure(ViT(small, key=jax.random.key(0)))
    plain = jax.tree.unflatten(skeleton, jax.tree.leaves(vit))
    if posemb == "learn":
        grid = vit.pos_embedding.reshape(4, 4, -1)
        by_hand = jax.image.resize(grid, (2, 2, grid.shape[-1]), "linear").reshape(4, -1)
        plain = eqx.tree_at(lambda v: v.pos_embedding, plain, by_hand)
    # jitted: one compile each rather than one per eager op
    call = eqx.filter_jit(lambda m, x, flexi: m(x, flexi=flexi))
    np.testing.assert_allclose(
        call(vit, image, True), call(plain, image, False), rtol=1e-5, atol=1e-6
    )
    full = jax.random.normal(jax.random.key(2), (28, 28, 1))
    # its own size: the same program as without flexi
    np.testing.assert_array_equal(call(vit, full, True), call(vit, full, False))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        vit(jnp.zeros((15, 15, 1)), flexi=True)
    with pytest.raises(ValueError, match="does not match"):
        vit(image)  # without flexi only the config's size


def test_learner_view_scores_the_resized_images():
    learner, _ = tiny_models()
    batch, mesh = tiny_batch(), default_mesh()
    config = step_config("acid", selection=SelectionConfig(score_image_size=7, n_chunks=4))
    view = eqx.filter_jit(lambda m, b: learner_view(m, b, config, mesh))(learner, batch)
    small = jax.image.resize(batch.images, (B, 7, 7, 1), "linear")
    np.testing.assert_array_equal(scoring_images(batch.images, 7), small)

    @eqx.filter_jit
    def by_hand(m, images, tokens):
        return m.embed_images(images, flexi=True), m.embed_texts(tokens)

    zimg, ztxt = by_hand(learner, small, batch.tokens)
    np.testing.assert_allclose(view.zimg, zimg, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(view.ztxt, ztxt, rtol=1e-5, atol=1e-6)
    assert scoring_images(batch.images, 0) is batch.images


def test_flexi_scoring_is_charged_at_the_scoring_resolution():
    learner = tiny_config()
    plain = step_config("acid", selection=SelectionConfig(n_chunks=4))
    flexi = dataclasses.replace(plain, selection=SelectionConfig(n_chunks=4, score_image_size=7))
    a, b = step_flops(learner, learner, plain, B), step_flops(learner, learner, flexi, B)
    small = flexi_config(learner, 7)
    assert isinstance(small, TwoTowerConfig) and small.image.num_patches == 1
    assert b["scoring_learner"] == B * small.forward_flops() < a["scoring_learner"]
    assert {k: v for k, v in a.items() if k not in ("scoring_learner", "total")} == {
        k: v for k, v in b.items() if k not in ("scoring_learner", "total")
    }
    assert a["total"] - b["total"] == a["scoring_learner"] - b["scoring_learner"]
    assert flexi_config(learner, 0) is learner


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("step.selection.score_image_size=30",), "multiple of the learner's patch size 7"),
        (("step.selection.score_image_size=56",), "below model.image_size=56"),
    ],
)
def test_bad_flexi_sizes_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(preset("acid"), list(overrides))


def test_flexi_without_selection_is_refused():
    with pytest.raises(ValueError, match="scores nothing"):
        apply_overrides(preset("iid"), ["step.selection.score_image_size=28"])
    assert apply_overrides(preset("acid"), ["step.selection.score_image_size=28"])
