"""Pair scores of a super-batch: learnability, easy reference, hard learner.

The score of a sub-batch Q is ``sum_{i, j in Q} S_ij`` with ``S_ij`` a pair
score built from the SigLIP pair losses ``l_ij`` of the learner and of the
reference model (RHO-LOSS, JEST §2.1, ACED §3):

- ``learnability``: ``l_ij(learner) - l_ij(reference)``
- ``easy_reference``: ``-l_ij(reference)``
- ``hard_learner``: ``l_ij(learner)``

Exact for the sigmoid loss, which is a sum over pairs.
"""

import equinox as eqx
from beartype import beartype as typechecker
from jaxtyping import Array, Float, jaxtyped

from aced.kernels.learnability import SCORES, BlockSizes, pair_score_matrix


class Embedded(eqx.Module):
    """One model's view of a super-batch.

    **Fields:**

    - `zimg`, `ztxt`: L2-normalised image and text embeddings, (B, D); row i
      of each forms the positive pair i.
    - `t`: the temperature itself (``exp`` of the stored log-temperature).
    - `b`: the bias.
    """

    zimg: Float[Array, "B D"]
    ztxt: Float[Array, "B D"]
    t: Float[Array, ""]
    b: Float[Array, ""]

    def flat(self) -> tuple[Array, Array, Array, Array]:
        """``(zimg, ztxt, t, b)``, the kernels' argument order."""
        return self.zimg, self.ztxt, self.t, self.b


def check_views(learner: Embedded, reference: Embedded, score: str) -> None:
    """Eager checks shared by the dense and blocked paths."""
    if score not in SCORES:
        raise ValueError(f"score={score!r} is unknown; use one of {', '.join(SCORES)}")
    if learner.zimg.shape[0] != reference.zimg.shape[0]:
        raise ValueError(
            f"learner and reference must embed the same super-batch: "
            f"B={learner.zimg.shape[0]} vs B={reference.zimg.shape[0]}"
        )


@jaxtyped(typechecker=typechecker)
def score_matrix(
    learner: Embedded, reference: Embedded, score: str, *, block: BlockSizes | None = None
) -> Float[Array, "B B"]:
    """The (B, B) pair-score matrix ``S`` of a super-batch.

    **Arguments:**

    - `learner`, `reference`: the two models' views of the same super-batch
      (their widths D may differ).
    - `score`: one of ``learnability``, ``easy_reference``, ``hard_learner``.
    - `block`: the tile shape the entries are computed with (default
      `BlockSizes()`); `joint_select_blocked` with the same `block` reproduces
      `joint_select` on this matrix exactly. Any tile shape gives the same
      values up to float rounding.

    **Returns:** ``S[i, j]``, the score of image i paired with text j.
    """
    check_views(learner, reference, score)
    return pair_score_matrix(*learner.flat(), *reference.flat(), score, block=block)
