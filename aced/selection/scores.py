"""Pair scores of a super-batch: the `PAIR_SCORES` registry and the matrices built from it.

The score of a sub-batch Q is ``sum_{i, j in Q} S_ij`` with ``S_ij`` a pair
score built from the SigLIP pair losses ``l_ij`` of the learner and/or of the
reference model (RHO-LOSS, JEST §2.1, ACED §3); exact for the sigmoid loss,
which is a sum over pairs. Registered:

- ``learnability``: ``l_ij(learner) - l_ij(reference)``
- ``easy_reference``: ``-l_ij(reference)``
- ``hard_learner``: ``l_ij(learner)``

A `PairScore` names the views it reads and one elementwise function
combining their per-pair losses. Every path derives from that entry: the
dense matrix (`score_matrix`), the blocked kernel
(`aced.kernels.blocked_pair_score_sums`), the per-example diagonal
(`per_example_scores`) and the FLOP count (`aced.flops`). A new score is one
function plus `register_pair_score`.
"""

import dataclasses
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
from beartype import beartype as typechecker
from jaxtyping import Array, Float, jaxtyped

from aced.kernels import BlockSizes, tiled_pair_scores
from aced.registry import lookup, register
from aced.types import Embedded, check_views

View = Literal["learner", "reference"]


@dataclasses.dataclass(frozen=True)
class PairScore:
    """A pair score: which views it reads and how it combines their pair losses.

    **Fields:**

    - `reads`: the views whose per-pair losses `combine` takes, in order, each
      ``"learner"`` or ``"reference"``.
    - `combine`: elementwise function of one loss array per entry of `reads`
      (any shape) -> scores of that shape. Used as a static argument of
      jitted functions and the Pallas kernel, so it must be a module-level
      function or a lambda kept by the registry, not one rebuilt per call.
    - `about`: one line for ``aced train --help``.
    """

    reads: tuple[View, ...]
    combine: Callable[..., Array]
    about: str = ""

    def __post_init__(self):
        if not self.reads or any(r not in ("learner", "reference") for r in self.reads):
            raise ValueError(f"reads={self.reads!r} must name 'learner' and/or 'reference'")

    def views(self, learner: Embedded, reference: Embedded) -> tuple[Embedded, ...]:
        """The views this score reads, in `combine`'s order."""
        return tuple({"learner": learner, "reference": reference}[r] for r in self.reads)

    @property
    def reads_reference(self) -> bool:
        return "reference" in self.reads


def _learnability(learner_loss, reference_loss):
    return learner_loss - reference_loss


def _easy_reference(reference_loss):
    return -reference_loss


def _hard_learner(learner_loss):
    return learner_loss


PAIR_SCORES: dict[str, PairScore] = {
    "learnability": PairScore(
        ("learner", "reference"), _learnability, "learner loss - reference loss (ACID, JEST)"
    ),
    "easy_reference": PairScore(("reference",), _easy_reference, "-reference loss"),
    "hard_learner": PairScore(("learner",), _hard_learner, "learner loss"),
}


def register_pair_score(name: str, score: PairScore, *, overwrite: bool = False) -> PairScore:
    """Register `score` as `name`: config fields, ``--help``, every path and the FLOPs see it."""
    return register(PAIR_SCORES, "pair score", name, score, overwrite=overwrite)


def pair_score(score: "str | PairScore") -> PairScore:
    """The registered `PairScore` named `score` (an entry passes through)."""
    return lookup(PAIR_SCORES, "pair score", score)


@jaxtyped(typechecker=typechecker)
def score_matrix(
    learner: Embedded,
    reference: Embedded,
    score: "str | PairScore",
    *,
    block: BlockSizes | None = None,
) -> Float[Array, "B B"]:
    """The (B, B) pair-score matrix ``S`` of a super-batch.

    **Arguments:**

    - `learner`, `reference`: the two models' views of the same super-batch
      (their widths D may differ).
    - `score`: a name of `PAIR_SCORES` or a `PairScore`.
    - `block`: the tile shape the entries are computed with (default
      `BlockSizes()`); `joint_select_blocked` with the same `block` reproduces
      `joint_select` on this matrix exactly. Any tile shape gives the same
      values up to float rounding.

    **Returns:** ``S[i, j]``, the score of image i paired with text j.
    """
    entry = pair_score(score)
    check_views(learner, reference)
    block = BlockSizes() if block is None else block
    return tiled_pair_scores(entry.views(learner, reference), entry.combine, block)


def positive_pair_losses(view: Embedded) -> Float[Array, " n"]:
    """Each example's own SigLIP pair loss ``l_ii`` (a batch of one), O(n D)."""
    logits = view.t * jnp.sum(view.zimg * view.ztxt, axis=1) + view.b
    return -jax.nn.log_sigmoid(logits)


@jaxtyped(typechecker=typechecker)
def per_example_scores(
    learner: Embedded, reference: Embedded, score: "str | PairScore"
) -> Float[Array, " B"]:
    """Each example's own (diagonal) pair score in O(B D): independent selection and diagnostics.

    Equal to ``diag(score_matrix(...))`` up to float rounding (the products
    here are row-wise dot products, not tiles).
    """
    entry = pair_score(score)
    return entry.combine(*map(positive_pair_losses, entry.views(learner, reference)))
