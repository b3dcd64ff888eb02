"""Active selection: pair scores and joint example selection (dense and blocked)."""

from aced.selection.blocked import joint_select_blocked
from aced.selection.jest import independent_select, joint_select
from aced.selection.scores import Embedded, score_matrix

__all__ = [
    "Embedded",
    "independent_select",
    "joint_select",
    "joint_select_blocked",
    "score_matrix",
]
