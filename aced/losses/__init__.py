"""Contrastive and distillation losses: pure functions over embeddings / logits.

Two registries name the choices a step makes: `CONTRASTIVE_LOSSES` (the
learner's loss, ``step.contrastive``) and `KD_LOSSES` (the distillation term,
``step.distill.loss``).
"""

from aced.losses.contrastive import (
    pair_labels,
    pair_logits,
    sigmoid_loss,
    sigmoid_loss_with_metrics,
    sigmoid_pair_losses,
    softmax_loss,
)
from aced.losses.distill import (
    KD_LOSSES,
    KDLoss,
    feature_kd,
    kd_loss,
    kd_sigmoid,
    kd_softmax,
    kd_softmax_kl,
    logit_kd_flops,
    register_kd_loss,
    sigmoid_kd,
    softmax_kd,
    softmax_kl,
)
from aced.losses.sharded import (
    CONTRASTIVE_LOSSES,
    ContrastiveLoss,
    contrastive_loss,
    register_contrastive_loss,
    sharded_sigmoid_loss,
    sigmoid_loss_all_gather,
    sigmoid_loss_ring,
)

__all__ = [
    "CONTRASTIVE_LOSSES",
    "KD_LOSSES",
    "ContrastiveLoss",
    "KDLoss",
    "contrastive_loss",
    "feature_kd",
    "kd_loss",
    "kd_sigmoid",
    "kd_softmax",
    "kd_softmax_kl",
    "logit_kd_flops",
    "pair_labels",
    "pair_logits",
    "register_contrastive_loss",
    "register_kd_loss",
    "sharded_sigmoid_loss",
    "sigmoid_kd",
    "sigmoid_loss",
    "sigmoid_loss_all_gather",
    "sigmoid_loss_ring",
    "sigmoid_loss_with_metrics",
    "sigmoid_pair_losses",
    "softmax_kd",
    "softmax_kl",
    "softmax_loss",
]
