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
import numpy as np
import pytest
from step_problem import wide_config

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
    return forward.lower(params, example).cost_analysis()["flops"]  # as traced: no compile


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
    # dense: one pair-logit matrix per view, each at its own width, on the default
    # tiles: rows padded to 512, columns to 64
    assert both["selection"] == 2 * 512 * 64 * 32 + 2 * 512 * 64 * 48
    easy = parts(PAIR_SCORES["easy_reference"])
    assert easy["scoring_learner"] == 0 and easy["selection"] == 2 * 512 * 64 * 48
    hard = parts(PAIR_SCORES["hard_learner"])
    assert hard["scoring_reference"] == 0 and hard["selection"] == 2 * 512 * 64 * 32
    # a new two-view score costs what learnability costs: nothing is keyed on a name
    margin = PairScore(
        ("learner", "reference"),
        lambda learner_loss, reference_loss: learner_loss - 0.5 * reference_loss,
    )
    assert parts(margin) == both
    cached = parts(PAIR_SCORES["learnability"], reference_cached=True)
    assert cached["scoring_reference"] == 0
    # blocked: the diagonal pass (512-row tiles against their own 512 columns) and the
    # rows and columns of the n_chunks - 1 later chunks of b / n_chunks = 4 (padded to 64)
    blocked = parts(PAIR_SCORES["learnability"], implementation="blocked")
    per_width = 2 * 512 * 512 + 3 * 2 * 2 * 512 * 64
    assert blocked["selection"] == per_width * 32 + per_width * 48
    independent = train_step_flops(
        learner,
        reference,
        super_batch=B,
        sub_batch=b,
        score=PAIR_SCORES["learnability"],
        rule=SELECTION_RULES["independent"],
        n_chunks=4,
    )
    # not joint: the diagonal alone, one row-wise product per example and view
    assert independent["selection"] == 2 * B * 32 + 2 * B * 48
    assert all(
        p["total"] == sum(v for k, v in p.items() if k != "total")
        for p in (both, easy, hard, blocked, independent)
    )


def test_selection_flops_known_values_by_scope():
    from aced.flops import selection_flops
    from aced.kernels import BlockSizes
    from aced.selection import SELECTION_RULES

    jest, block = SELECTION_RULES["jest"], BlockSizes(32, 16)

    def count(implementation, **kw):
        return selection_flops(
            (8,),
            jest,
            implementation,
            super_batch=64,
            sub_batch=32,
            n_chunks=2,
            block=block,
            **kw,
        )

    dense, blocked = 2 * 64 * 64 * 8, 2 * 64 * 32 * 8 + 2 * 2 * 64 * 16 * 8
    assert count("dense") == dense and count("blocked") == blocked
    # global: XLA spreads the dense tiles over the devices; every device runs the
    # whole blocked selection on the all-gathered super-batch
    assert count("dense", n_devices=4) == dense
    assert count("blocked", n_devices=4) == 4 * blocked
    # local: each of 4 devices selects 8 of its 16 examples: rows padded to 32,
    # a chunk of 4 padded to 16 columns
    assert count("dense", scope="local", n_devices=4) == 4 * 2 * 32 * 16 * 8
    assert count("blocked", scope="local", n_devices=4) == 4 * (
        2 * 32 * 32 * 8 + 2 * 2 * 32 * 16 * 8
    )
    # block_d: the width is zero-padded to whole 16-wide slices, 8 -> 16, in both paths
    block = BlockSizes(32, 16, block_d=16)
    assert count("dense") == 2 * dense and count("blocked") == 2 * blocked


def test_step_flops_passes_the_device_count_and_token_length():
    from aced.train.config import SelectionConfig, StepConfig
    from aced.train.step import step_flops

    learner, reference = _tower_configs()

    def step(n_devices, num_tokens=None, **selection):
        config = StepConfig(
            method="acid", selection=SelectionConfig(filter_ratio=0.5, n_chunks=4, **selection)
        )
        return step_flops(learner, reference, config, 64, n_devices, num_tokens)

    blocked = step(1, implementation="blocked")["selection"]
    assert step(8, implementation="blocked")["selection"] == 8 * blocked
    assert step(8, implementation="dense")["selection"] == step(1)["selection"]
    local = step(8, implementation="dense", scope="local")["selection"]
    assert local == 8 * (2 * 512 * 64 * 32 + 2 * 512 * 64 * 48)
    short = step(1, num_tokens=5)
    assert short["scoring_learner"] == 64 * learner.forward_flops(5)
    assert short["scoring_reference"] == 64 * reference.forward_flops(5)


SELECTION_D = 512  # wide embeddings: the pair-logit products dominate XLA's count


def _selections():
    """The three selection paths on tiles of one block each (every loop runs once,
    so XLA's once-per-loop-body count is the whole count)."""
    from aced.kernels import BlockSizes
    from aced.selection import (
        independent_select,
        joint_select,
        joint_select_blocked,
        per_example_scores,
        score_matrix,
    )

    block = BlockSizes(64, 64)
    return block, {
        "dense": lambda key, learner, ref: joint_select(
            key, score_matrix(learner, ref, "learnability", block=block), 32, 2
        ),
        "blocked": lambda key, learner, ref: joint_select_blocked(
            key, learner, ref, "learnability", 32, 2, block=block
        ),
        "independent": lambda key, learner, ref: independent_select(
            key, per_example_scores(learner, ref, "learnability"), 32, rule="independent_greedy"
        ),
    }


@pytest.mark.parametrize("n_devices", [1, 8])
@pytest.mark.parametrize("path", ["dense", "blocked", "independent"])
def test_selection_flops_match_xla_as_executed(path, n_devices):
    """The selection's count against XLA's count of the compiled selection.

    On 8 devices the views are sharded over ``data`` as the step leaves them
    (global scope); XLA's count is per device, so 8 x it is the executed total:
    about one selection for the dense tiles (XLA splits them over the
    devices), 8 for the blocked path (every device runs it whole).
    """
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from aced.flops import selection_flops
    from aced.selection import SELECTION_RULES, Embedded

    block, paths = _selections()
    B, D = 64, SELECTION_D
    mesh = Mesh(np.array(jax.devices()[:n_devices]), ("data",))
    rows, scalar = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())

    def view(seed):
        zimg, ztxt = jax.random.normal(jax.random.key(seed), (2, B, D)) / D**0.5
        put = jax.device_put
        return Embedded(
            put(zimg, rows),
            put(ztxt, rows),
            put(jnp.float32(1.0), scalar),
            put(jnp.float32(0.0), scalar),
        )

    compiled = jax.jit(paths[path]).lower(jax.random.key(0), view(1), view(2)).compile()
    xla = n_devices * compiled.cost_analysis()["flops"]
    rule = SELECTION_RULES["independent_greedy" if path == "independent" else "jest"]
    analytic = selection_flops(
        (D, D),
        rule,
        "blocked" if path == "blocked" else "dense",
        super_batch=B,
        sub_batch=32,
        n_chunks=2,
        n_devices=n_devices,
        block=block,
    )
    assert analytic <= xla <= 1.05 * analytic, (analytic, xla, xla / analytic)


def test_hard_learner_runs_no_reference_forward():
    """XLA's count of the compiled scoring and selection of a score that reads only
    the learner: the reference's forward is not executed (nor charged).

    Depth-1, width-256 towers (as in ``tests/test_step.py``); the models are
    abstract (``eqx.filter_eval_shape``): only the compiled program is needed.
    """
    from jax.sharding import Mesh

    from aced.models import TwoTower
    from aced.train.config import SelectionConfig, StepConfig
    from aced.train.curation import curate
    from aced.train.state import SuperBatch
    from aced.train.step import step_flops

    config = wide_config()
    model = eqx.filter_eval_shape(TwoTower, config, key=jax.random.key(0))
    params, static = eqx.partition(model, lambda x: isinstance(x, jax.ShapeDtypeStruct))
    B = 32
    batch = (
        jax.ShapeDtypeStruct((B, 28, 28, 1), jnp.float32),
        jax.ShapeDtypeStruct((B, 16), jnp.int32),
        jax.ShapeDtypeStruct((B,), jnp.int32),
    )
    step = StepConfig(
        method="acid",
        selection=SelectionConfig(
            score="hard_learner", rule="independent_greedy", filter_ratio=0.5, n_chunks=4
        ),
    )
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))

    def scoring(key, learner, reference, batch):
        learner, reference = eqx.combine(learner, static), eqx.combine(reference, static)
        return curate(key, learner, reference, SuperBatch(*batch), step, mesh)[0].indices

    key = jax.eval_shape(lambda: jax.random.key(0))
    xla = jax.jit(scoring).lower(key, params, params, batch).cost_analysis()["flops"]
    flops = step_flops(config, config, step, B)
    assert flops["scoring_reference"] == 0
    analytic = flops["scoring_learner"] + flops["selection"]
    # a reference forward would double the count
    assert analytic <= xla <= 1.03 * analytic, (analytic, xla, xla / analytic)


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


def test_teacher_and_cache_pass_are_charged_where_they_run():
    import dataclasses

    from aced.flops import reference_cache_flops, train_step_flops
    from aced.losses import KD_LOSSES
    from aced.selection import PAIR_SCORES, SELECTION_RULES

    learner, reference = _tower_configs()
    B, b, kd = 64, 16, KD_LOSSES["softmax"]

    def parts(score=None, **kw):
        return train_step_flops(
            learner,
            reference,
            super_batch=B,
            sub_batch=b,
            score=score,
            rule=SELECTION_RULES["jest"],
            n_chunks=4,
            kd=kd,
            **kw,
        )

    # KD online: the teacher embeds the KD batch itself
    assert parts()["teacher"] == b * reference.forward_flops()
    # ACED: the teacher's view of the KD batch is the reference's view from scoring, which
    # runs for a KD term even when the score does not read the reference
    hard = parts(PAIR_SCORES["hard_learner"])
    assert hard["scoring_reference"] == B * reference.forward_flops() and hard["teacher"] == 0
    # cached: no reference forward in the step; the one-off pass made them all
    for score in (None, PAIR_SCORES["learnability"]):
        cached = parts(score, reference_cached=True)
        assert cached["scoring_reference"] == cached["teacher"] == 0
    image, text = reference.image, reference.text
    assert reference_cache_flops(reference, 1000, 6) == 1000 * (
        image.forward_flops() + text.forward_flops(6)
    )
    assert reference_cache_flops(reference, 3) == 3 * reference.forward_flops()
    # a cached reference may read shorter captions than the learner's
    short = dataclasses.replace(reference, text=dataclasses.replace(text, max_len=5))
    cached = train_step_flops(
        learner,
        short,
        super_batch=B,
        sub_batch=b,
        score=None,
        kd=kd,
        reference_cached=True,
        num_tokens=8,
    )
    assert cached["teacher"] == 0 and cached["update"] == 3 * b * learner.forward_flops(8)
