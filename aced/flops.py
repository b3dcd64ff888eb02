"""Analytic training FLOPs of one step, and of a run's one-off passes, from the
registry entries that cost them.

Per-example forward FLOPs belong to the model configs
(``TwoTowerConfig.forward_flops()``, built from the integer helpers of
`aced.models.flops`); a pair score's cost follows from the views it reads
(`aced.selection.PairScore`), a selection rule's from whether it is joint
(`aced.selection.SelectionRule`), a KD loss's from its own `flops`
(`aced.losses.KDLoss`). Two FLOPs per multiply-add, matrix products only.
A backward pass costs about twice the forward, so training on b examples is
about ``3 * b * forward``.

Every count is of the compute that is executed, summed over all devices:
the selection as its implementation runs it (padded to the kernel's tiles;
repeated on every device where it is repeated), a reference forward only
where one runs. Reference embeddings read from the cache cost nothing per
step; the one pass that made the cache (`reference_cache_flops`) is charged
once, by the training loop, to the run's ``flops_cumulative``. The training
of the reference itself is not a step's cost: the loop reports it apart, as
``reference_flops`` (docs/training.md, "FLOPs").
"""

import dataclasses
from typing import Literal

from aced.kernels import BlockSizes
from aced.losses import KDLoss
from aced.models import TextConfig, TwoTowerConfig, ViTConfig
from aced.models.flops import attention_flops, encoder_flops, mlp_flops, pair_logits_flops
from aced.selection import PairScore, SelectionRule

PARTS = ("scoring_learner", "scoring_reference", "selection", "update", "teacher", "losses")

__all__ = [
    "PARTS",
    "attention_flops",
    "encoder_flops",
    "flexi_config",
    "mlp_flops",
    "pair_logits_flops",
    "reference_cache_flops",
    "selection_flops",
    "text_forward_flops",
    "train_step_flops",
    "two_tower_forward_flops",
    "vit_forward_flops",
]


def vit_forward_flops(config: ViTConfig) -> int:
    """Forward FLOPs of one image through a `ViT` built from `config`."""
    return config.forward_flops()


def text_forward_flops(config: TextConfig, num_tokens: int | None = None) -> int:
    """Forward FLOPs of one token row (length `num_tokens`, default `max_len`)."""
    return config.forward_flops(num_tokens)


def two_tower_forward_flops(config: TwoTowerConfig, num_tokens: int | None = None) -> int:
    """Forward FLOPs of one image-text pair through both towers (no pair logits)."""
    return config.forward_flops(num_tokens)


def reference_cache_flops(
    reference: TwoTowerConfig, n_examples: int, num_tokens: int | None = None
) -> int:
    """The one-off pass of ``step.reference_embeddings="cached"``: N reference forwards.

    `n_examples` is N, every training example; `num_tokens` the length of the
    reference tokenizer's rows (default the text tower's ``max_len``). The
    blank rows that pad the pass's last batch are not charged.
    """
    return n_examples * reference.forward_flops(num_tokens)


def _padded(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def selection_flops(
    widths: tuple[int, ...],
    rule: SelectionRule,
    implementation: Literal["dense", "blocked"],
    *,
    super_batch: int,
    sub_batch: int,
    n_chunks: int,
    scope: Literal["global", "local"] = "global",
    n_devices: int = 1,
    block: BlockSizes | None = None,
) -> int:
    """Pair-logit FLOPs of one step's selection as executed, summed over the devices.

    **Arguments:**

    - `widths`: the embedding widths of the views the score reads.
    - `rule`, `implementation`: the selection rule, and for a joint rule the
      dense matrix or the blocked kernel.
    - `super_batch`, `sub_batch`, `n_chunks`: B, b and the chunks of b.
    - `scope`, `n_devices`: ``local``: each of the devices selects b / n from
      its own B / n examples; ``global``: one selection over all B.
    - `block`: the tiles the products run on (default `BlockSizes()`, the
      tiles `aced.train.curation` uses).

    **Returns:** per view (at its width D, padded to whole ``block_d``
    slices: ``block.width(D)``), with R the rows padded to
    ``block_rows`` and each column count padded to ``block_cols``:

    - a rule that is not joint: the diagonal alone, ``2 * B * D`` (row-wise products);
    - dense: the (R, B) pair logits, one tile at a time (`aced.kernels.tiled_pair_scores`);
    - blocked: the diagonal pass (`aced.kernels.tiled_pair_score_diagonal`),
      ``2 * R * block_rows * D``, plus, for each of the ``n_chunks - 1``
      later chunks of c = b / n_chunks, the kernel's rows and columns
      (`aced.kernels.blocked_pair_score_sums`), ``2 * 2 * R * c * D``.

    Under global scope XLA spreads the dense tiles over the devices (each
    computes its share of the matrix, which is then all-gathered), so they
    count once; the blocked kernel and its diagonal pass run whole on every
    device, on the all-gathered super-batch, so they count ``n_devices``
    times. ``tests/test_flops.py`` checks both against XLA's count of the
    compiled selection on 8 devices.
    """
    block = BlockSizes() if block is None else block
    shards = n_devices if scope == "local" else 1
    n, k = super_batch // shards, sub_batch // shards
    if not rule.joint:
        return shards * sum(2 * n * d for d in widths)
    widths = [block.width(d) for d in widths]
    rows = _padded(n, block.block_rows)
    if implementation == "dense":
        cols = _padded(n, block.block_cols)
        return shards * sum(pair_logits_flops(rows, cols, d) for d in widths)
    chunk = _padded(k // n_chunks, block.block_cols)
    diagonal = sum(pair_logits_flops(rows, block.block_rows, d) for d in widths)
    sums = (n_chunks - 1) * sum(2 * pair_logits_flops(rows, chunk, d) for d in widths)
    replicas = n_devices if scope == "global" else 1
    return shards * replicas * (diagonal + sums)


def flexi_config(learner: TwoTowerConfig, image_size: int) -> TwoTowerConfig:
    """The learner's config as it scores images of side `image_size` (Flexi scoring):
    the same towers on a smaller patch grid; `learner` itself when `image_size` is 0."""
    if not image_size:
        return learner
    image = dataclasses.replace(learner.image, image_size=image_size)
    return dataclasses.replace(learner, image=image)


def train_step_flops(
    learner: TwoTowerConfig,
    reference: TwoTowerConfig,
    *,
    super_batch: int,
    sub_batch: int,
    score: PairScore | None,
    rule: SelectionRule | None = None,
    implementation: Literal["dense", "blocked"] = "dense",
    n_chunks: int = 1,
    reference_cached: bool = False,
    kd: KDLoss | None = None,
    kd_separate_batch: bool = False,
    projection: bool = False,
    selection_scope: Literal["global", "local"] = "global",
    n_devices: int = 1,
    num_tokens: int | None = None,
    scoring_learner: TwoTowerConfig | None = None,
    block: BlockSizes | None = None,
) -> dict[str, int]:
    """Analytic training FLOPs of one step, by part (PAPER.md, "FLOPs"), summed over devices.

    **Arguments:**

    - `learner`, `reference`: the two models' configs (the reference is also the teacher).
    - `super_batch`, `sub_batch`: B and b.
    - `score`, `rule`: the pair score and selection rule of a curated step;
      ``score=None`` for IID / KD (no scoring).
    - `implementation`: a joint rule's dense B x B matrix or the blocked kernel.
    - `n_chunks`: chunks of the joint selection.
    - `reference_cached`: reference embeddings read from the cache (no reference forward).
    - `kd`, `kd_separate_batch`: a KD term (its entry); on a second (IID) sub-batch.
    - `projection`: the student's embeddings are projected to the teacher's width.
    - `selection_scope`, `n_devices`: ``step.selection.scope`` and the mesh's
      device count (`selection_flops`).
    - `num_tokens`: tokens per caption of the batch (default each text tower's ``max_len``).
    - `scoring_learner`: the learner as it scores the super-batch when that
      differs from how it trains (Flexi scoring: `flexi_config`); default `learner`.

    **Returns:** ``{"scoring_learner", "scoring_reference", "selection",
    "update", "teacher", "losses", "total"}``:

    - ``scoring_learner``: the learner's forward on B, when the score reads it;
    - ``scoring_reference``: the reference's forward on B, when online and the
      score reads it or a KD term reuses its embeddings;
    - ``selection``: `selection_flops`, as executed;
    - ``update``: forward + backward (3x forward) of the learner on b (2b
      with a separate KD batch);
    - ``teacher``: the teacher's forward on the KD batch where it runs on
      its own (KD online: b forwards); 0 where its embeddings come from
      scoring (already in ``scoring_reference``) or from the cache (whose
      one-off pass, `reference_cache_flops`, the loop adds to the run once:
      charging b forwards a step as well would count those forwards twice);
    - ``losses``: the contrastive and KD losses' pair logits (and the
      feature-KD projection), forward and backward.
    """
    B, b = super_batch, sub_batch
    d_l, d_r = learner.embed_dim, reference.embed_dim
    learner_forward = learner.forward_flops(num_tokens)
    # Only an online reference reads the batch's tokens (a cached one may read fewer).
    reference_forward = 0 if reference_cached else reference.forward_flops(num_tokens)
    parts = dict.fromkeys(PARTS, 0)
    if score is not None:
        if rule is None:
            raise ValueError("a curated step (score given) needs its selection rule")
        if "learner" in score.reads:
            scorer = learner if scoring_learner is None else scoring_learner
            parts["scoring_learner"] = B * scorer.forward_flops(num_tokens)
        if not reference_cached and (score.reads_reference or kd is not None):
            parts["scoring_reference"] = B * reference_forward
        widths = tuple({"learner": d_l, "reference": d_r}[r] for r in score.reads)
        parts["selection"] = selection_flops(
            widths,
            rule,
            implementation,
            super_batch=B,
            sub_batch=b,
            n_chunks=n_chunks,
            scope=selection_scope,
            n_devices=n_devices,
            block=block,
        )
    trained = 2 * b if (kd is not None and kd_separate_batch) else b
    parts["update"] = 3 * trained * learner_forward
    parts["losses"] = 3 * pair_logits_flops(b, b, d_l)
    if kd is not None:
        if score is None and not reference_cached:
            parts["teacher"] = b * reference_forward
        parts["losses"] += kd.flops(b, d_l, d_r)
        if projection:  # both towers' (b, D_s) @ (D_s, D_t), forward and backward
            parts["losses"] += 3 * 2 * pair_logits_flops(b, d_r, d_l)
    parts["total"] = sum(parts.values())
    return parts
