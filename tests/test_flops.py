"""Analytic FLOPs against XLA's own count of the compiled forward pass.

XLA's ``cost_analysis()`` counts a ``scan`` body once, so the models here are
built with ``scan_layers=False`` (the block loop fully unrolled, every block
visible to XLA). XLA also counts elementwise work (LayerNorm, softmax, GELU,
bias and residual adds) that the analytic formula leaves out by design, so the
analytic count must be a lower bound within 2 %; the shapes are ones where
matmuls dominate (width 256, MLP 4x), as in every real tower.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

from aced.flops import (
    attention_flops,
    text_forward_flops,
    two_tower_forward_flops,
    vit_forward_flops,
)
from aced.models import TextConfig, TextEncoder, TwoTowerConfig, ViT, ViTConfig

VIT = dict(
    image_size=32, patch_size=8, width=256, depth=2, mlp_dim=1024, num_heads=4, scan_layers=False
)
TEXT = dict(
    vocab_size=64, max_len=16, width=256, depth=2, mlp_dim=1024, num_heads=4, scan_layers=False
)


def xla_flops(module, example) -> float:
    params, static = eqx.partition(module, eqx.is_array)
    forward = jax.jit(lambda p, x: eqx.combine(p, static)(x))
    return forward.lower(params, example).compile().cost_analysis()["flops"]


def assert_close_lower_bound(analytic: int, xla: float):
    assert analytic <= xla <= 1.02 * analytic, (analytic, xla, xla / analytic)


@pytest.mark.parametrize(
    "overrides",
    [
        {"pool": "map", "posemb": "learn", "out_dim": 128},
        {"pool": "gap", "posemb": "sincos2d", "out_dim": None},
        {"pool": "map", "posemb": "learn", "out_dim": None, "depth": 3, "patch_size": 4},
    ],
)
def test_vit_flops_match_xla(getkey, overrides):
    config = ViTConfig(**{**VIT, **overrides})
    image = jnp.zeros((32, 32, 3), jnp.float32)
    assert_close_lower_bound(vit_forward_flops(config), xla_flops(ViT(config, key=getkey()), image))


@pytest.mark.parametrize("length, pool", [(16, "last"), (12, "mean")])
def test_text_flops_match_xla(getkey, length, pool):
    config = TextConfig(**TEXT, pool=pool, out_dim=128)
    tokens = jnp.zeros((length,), jnp.int32)
    analytic = text_forward_flops(config, length)
    assert_close_lower_bound(analytic, xla_flops(TextEncoder(config, key=getkey()), tokens))


def test_depth_adds_identical_blocks():
    shallow = ViTConfig(**{**VIT, "depth": 1})
    deep = dataclasses.replace(shallow, depth=5)
    per_block = vit_forward_flops(dataclasses.replace(shallow, depth=2)) - vit_forward_flops(
        shallow
    )
    assert vit_forward_flops(deep) == vit_forward_flops(shallow) + 4 * per_block
    # One block: 4 projections, QK^T and AV over P=16 tokens, and the MLP.
    assert per_block == 2 * 16 * 4 * 256 * 256 + 2 * 2 * 16 * 16 * 256 + 2 * 2 * 16 * 256 * 1024


def test_attention_flops_known_value():
    # 1 probe query over 3 tokens of width 2: q 2*1*4, k and v 2*2*3*4, out 2*1*4,
    # QK^T 2*1*3*2, AV 2*1*3*2.
    assert attention_flops(1, 3, 2) == 8 + 48 + 8 + 12 + 12


def test_two_tower_is_sum_and_config_methods_agree():
    image = ViTConfig(**VIT, out_dim=256)
    text = TextConfig(**TEXT, out_dim=256)
    config = TwoTowerConfig(image=image, text=text)
    total = vit_forward_flops(image) + text_forward_flops(text)
    assert two_tower_forward_flops(config) == config.forward_flops() == total
    assert image.forward_flops() == vit_forward_flops(image)
    assert text.forward_flops(8) == text_forward_flops(text, 8) < text_forward_flops(text)
    with pytest.raises(ValueError, match="num_tokens"):
        text_forward_flops(text, 17)


# ---- the step's FLOPs derive from the registry entries


def _tower_configs():
    small = TwoTowerConfig.from_variants(
        image_variant="mu/7",
        text_variant="mu",
        embed_dim=32,
        image_size=28,
        vocab_size=50,
        max_len=8,
        image_overrides={"channels": 1},
    )
    large = TwoTowerConfig.from_variants(
        image_variant="nano/7",
        text_variant="nano",
        embed_dim=48,
        image_size=28,
        vocab_size=50,
        max_len=8,
        image_overrides={"channels": 1},
    )
    return small, large


def test_scoring_forwards_follow_the_views_a_score_reads():
    from aced.flops import train_step_flops
    from aced.selection import PAIR_SCORES, SELECTION_RULES, PairScore

    learner, reference = _tower_configs()
    B, b = 64, 16
    jest = SELECTION_RULES["jest"]

    def parts(score, **kw):
        return train_step_flops(
            learner, reference, super_batch=B, sub_batch=b, score=score, rule=jest, n_chunks=4, **kw
        )

    both = parts(PAIR_SCORES["learnability"])
    assert both["scoring_learner"] == B * learner.forward_flops()
    assert both["scoring_reference"] == B * reference.forward_flops()
    # dense: one (B, B) pair-logit matrix per view, each at its own width
    assert both["selection"] == 2 * B * B * 32 + 2 * B * B * 48
    easy = parts(PAIR_SCORES["easy_reference"])
    assert easy["scoring_learner"] == 0 and easy["selection"] == 2 * B * B * 48
    hard = parts(PAIR_SCORES["hard_learner"])
    assert hard["scoring_reference"] == 0 and hard["selection"] == 2 * B * B * 32
    # a new two-view score costs what learnability costs: nothing is keyed on a name
    margin = PairScore(
        ("learner", "reference"),
        lambda learner_loss, reference_loss: learner_loss - 0.5 * reference_loss,
    )
    assert parts(margin) == both
    cached = parts(PAIR_SCORES["learnability"], reference_cached=True)
    assert cached["scoring_reference"] == 0
    # blocked: rows and columns of the n_chunks - 1 later chunks of b / n_chunks
    blocked = parts(PAIR_SCORES["learnability"], implementation="blocked")
    assert blocked["selection"] == 3 * (2 * 2 * B * 4 * 32 + 2 * 2 * B * 4 * 48)
    independent = train_step_flops(
        learner,
        reference,
        super_batch=B,
        sub_batch=b,
        score=PAIR_SCORES["learnability"],
        rule=SELECTION_RULES["independent"],
        n_chunks=4,
    )
    assert independent["selection"] == 0
    assert all(
        p["total"] == sum(v for k, v in p.items() if k != "total")
        for p in (both, easy, hard, blocked, independent)
    )


def test_kd_flops_come_from_the_kd_loss_entry():
    from aced.flops import train_step_flops
    from aced.losses import KD_LOSSES

    learner, reference = _tower_configs()
    b = 16
    contrastive = 3 * 2 * b * b * 32

    def losses(name, **kw):
        return train_step_flops(
            learner, reference, super_batch=b, sub_batch=b, score=None, kd=KD_LOSSES[name], **kw
        )

    for name in ("softmax", "softmax_kl", "sigmoid"):
        # the student's (b, b) logits forward and backward, the teacher's forward
        assert losses(name)["losses"] == contrastive + 3 * 2 * b * b * 32 + 2 * b * b * 48, name
    assert losses("feature")["losses"] == contrastive
    # a projection (b, 32) -> (b, 48) of both towers, forward and backward
    projected = losses("feature", projection=True)["losses"]
    assert projected == contrastive + 3 * 2 * (2 * b * 48 * 32)
    online = losses("softmax")
    assert online["teacher"] == b * reference.forward_flops()
    assert losses("softmax", reference_cached=True)["teacher"] == 0
    separate = train_step_flops(
        learner,
        reference,
        super_batch=4 * b,
        sub_batch=b,
        score=None,
        kd=KD_LOSSES["softmax"],
        kd_separate_batch=True,
    )
    assert separate["update"] == 3 * 2 * b * learner.forward_flops()
