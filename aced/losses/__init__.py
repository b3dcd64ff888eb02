"""Contrastive and distillation losses: pure functions over embeddings / logits."""

from aced.losses.contrastive import (
    pair_labels,
    pair_logits,
    sigmoid_loss,
    sigmoid_loss_with_metrics,
    sigmoid_pair_losses,
    softmax_loss,
)
from aced.losses.distill import feature_kd, sigmoid_kd, softmax_kd, softmax_kl
from aced.losses.sharded import (
    sharded_sigmoid_loss,
    sigmoid_loss_all_gather,
    sigmoid_loss_ring,
)

__all__ = [
    "feature_kd",
    "sigmoid_kd",
    "softmax_kd",
    "softmax_kl",
    "pair_labels",
    "pair_logits",
    "sharded_sigmoid_loss",
    "sigmoid_loss",
    "sigmoid_loss_all_gather",
    "sigmoid_loss_ring",
    "sigmoid_loss_with_metrics",
    "sigmoid_pair_losses",
    "softmax_loss",
]
