"""Analytic training FLOPs of one step, from the registry entries that cost them.

Per-example forward FLOPs belong to the model configs
(``TwoTowerConfig.forward_flops()``, built from the integer helpers of
`aced.models.flops`); a pair score's cost follows from the views it reads
(`aced.selection.PairScore`), a selection rule's from whether it is joint
(`aced.selection.SelectionRule`), a KD loss's from its own `flops`
(`aced.losses.KDLoss`). Two FLOPs per multiply-add, matrix products only.
A backward pass costs about twice the forward, so training on b examples is
about ``3 * b * forward``.
"""

from typing import Literal

from aced.losses import KDLoss
from aced.models import TextConfig, TwoTowerConfig, ViTConfig
from aced.models.flops import attention_flops, encoder_flops, mlp_flops, pair_logits_flops
from aced.selection import PairScore, SelectionRule

PARTS = ("scoring_learner", "scoring_reference", "selection", "update", "teacher", "losses")

__all__ = [
    "PARTS",
    "attention_flops",
    "encoder_flops",
    "mlp_flops",
    "pair_logits_flops",
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


def selection_flops(
    widths: tuple[int, ...],
    rule: SelectionRule,
    implementation: Literal["dense", "blocked"],
    *,
    super_batch: int,
    sub_batch: int,
    n_chunks: int,
    groups: int = 1,
) -> int:
    """Pair-logit FLOPs of one selection over `groups` equal shards of the super-batch.

    `widths` are the embedding widths of the views the score reads. Dense: the
    (B, B) pair logits of each view; blocked: the rows and columns of each new
    chunk (``n_chunks - 1`` of them); a rule that is not joint reads only the
    diagonal (no products).
    """
    if not rule.joint:
        return 0
    B, g = super_batch, groups
    if implementation == "dense":
        return g * sum(pair_logits_flops(B // g, B // g, d) for d in widths)
    chunk = sub_batch // g // n_chunks
    return g * (n_chunks - 1) * sum(2 * pair_logits_flops(B // g, chunk, d) for d in widths)


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
    selection_groups: int = 1,
) -> dict[str, int]:
    """Analytic training FLOPs of one step, by part (PAPER.md, "FLOPs").

    **Arguments:**

    - `learner`, `reference`: the two models' configs (the reference is also the teacher).
    - `super_batch`, `sub_batch`: B and b.
    - `score`, `rule`: the pair score and selection rule of a curated step;
      ``score=None`` for IID / KD (no scoring).
    - `implementation`: a joint rule's dense B x B matrix or the blocked kernel.
    - `n_chunks`: chunks of the joint selection.
    - `reference_cached`: reference embeddings precomputed (no reference forward).
    - `kd`, `kd_separate_batch`: a KD term (its entry); on a second (IID) sub-batch.
    - `projection`: the student's embeddings are projected to the teacher's width.
    - `selection_groups`: the selection runs separately on this many equal
      shards of the super-batch (``scope="local"``: one per device).

    **Returns:** ``{"scoring_learner", "scoring_reference", "selection",
    "update", "teacher", "losses", "total"}``. Scoring embeds B examples with
    each model the score reads (and with the reference when a KD term reuses
    its embeddings). The update is forward + backward (3x forward) of the
    learner on b examples (2b with a separate KD batch). A teacher forward is
    free when its embeddings come from scoring or the cache.
    """
    B, b = super_batch, sub_batch
    d_l, d_r = learner.embed_dim, reference.embed_dim
    parts = dict.fromkeys(PARTS, 0)
    if score is not None:
        if rule is None:
            raise ValueError("a curated step (score given) needs its selection rule")
        if "learner" in score.reads:
            parts["scoring_learner"] = B * learner.forward_flops()
        if not reference_cached and (score.reads_reference or kd is not None):
            parts["scoring_reference"] = B * reference.forward_flops()
        widths = tuple({"learner": d_l, "reference": d_r}[r] for r in score.reads)
        parts["selection"] = selection_flops(
            widths,
            rule,
            implementation,
            super_batch=B,
            sub_batch=b,
            n_chunks=n_chunks,
            groups=selection_groups,
        )
    trained = 2 * b if (kd is not None and kd_separate_batch) else b
    parts["update"] = 3 * trained * learner.forward_flops()
    parts["losses"] = 3 * pair_logits_flops(b, b, d_l)
    if kd is not None:
        if score is None and not reference_cached:
            parts["teacher"] = b * reference.forward_flops()
        parts["losses"] += kd.flops(b, d_l, d_r)
        if projection:  # both towers' (b, D_s) @ (D_s, D_t), forward and backward
            parts["losses"] += 3 * 2 * pair_logits_flops(b, d_r, d_l)
    parts["total"] = sum(parts.values())
    return parts
