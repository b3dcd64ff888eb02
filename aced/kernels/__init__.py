"""Pallas kernels, each with its ``*_reference`` in plain jnp in the same file."""

from aced.kernels.learnability import (
    SCORES,
    BlockSizes,
    blocked_pair_score_sums,
    blocked_pair_score_sums_reference,
    pair_score_diagonal,
    pair_score_matrix,
)

__all__ = [
    "SCORES",
    "BlockSizes",
    "blocked_pair_score_sums",
    "blocked_pair_score_sums_reference",
    "pair_score_diagonal",
    "pair_score_matrix",
]
