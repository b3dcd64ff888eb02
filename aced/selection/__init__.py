"""Active selection: the pair-score and selection-rule registries, joint selection (dense and blocked)."""

from aced.selection.blocked import joint_select_blocked
from aced.selection.diagnostics import chunk_supports, effective_support, selection_terms
from aced.selection.jest import (
    SELECTION_RULES,
    SelectionRule,
    greedy_top_k,
    independent_select,
    joint_select,
    register_selection_rule,
    sample_top_k,
    select_chunks,
    selection_rule,
)
from aced.selection.scores import (
    PAIR_SCORES,
    PairScore,
    pair_score,
    per_example_scores,
    positive_pair_losses,
    register_pair_score,
    score_matrix,
)
from aced.types import Embedded

__all__ = [
    "PAIR_SCORES",
    "SELECTION_RULES",
    "Embedded",
    "chunk_supports",
    "effective_support",
    "PairScore",
    "SelectionRule",
    "greedy_top_k",
    "independent_select",
    "joint_select",
    "joint_select_blocked",
    "pair_score",
    "per_example_scores",
    "positive_pair_losses",
    "register_pair_score",
    "register_selection_rule",
    "sample_top_k",
    "score_matrix",
    "select_chunks",
    "selection_rule",
    "selection_terms",
]
