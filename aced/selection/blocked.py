"""Joint example selection at scale: the JEST loop on the Pallas pair-score kernel.

Same algorithm, randomness and arithmetic as `aced.selection.joint_select`,
but the (B, B) score matrix is never formed: the diagonal comes from
`pair_score_diagonal` and each chunk's row and column sums from the kernel
`blocked_pair_score_sums`, both O(B·D) in memory.
"""

import functools

import jax
from beartype import beartype as typechecker
from jaxtyping import Array, Int, PRNGKeyArray, jaxtyped

from aced.kernels.learnability import BlockSizes, blocked_pair_score_sums, pair_score_diagonal
from aced.selection.jest import check_counts, check_finite, select_chunks
from aced.selection.scores import Embedded, check_views


@functools.partial(
    jax.jit, static_argnames=("score", "n_select", "n_chunks", "block", "interpret", "greedy")
)
def _joint_select_blocked(
    key, learner, reference, score, n_select, n_chunks, block, interpret, greedy
):
    models = (*learner.flat(), *reference.flat())
    diagonal = pair_score_diagonal(*models, score, block=block)

    def chunk_sums(chunk):
        return blocked_pair_score_sums(*models, chunk, score, block=block, interpret=interpret)

    return select_chunks(key, diagonal, chunk_sums, n_select, n_chunks, greedy)


@jaxtyped(typechecker=typechecker)
def joint_select_blocked(
    key: PRNGKeyArray,
    learner: Embedded,
    reference: Embedded,
    score: str,
    n_select: int,
    n_chunks: int,
    *,
    block: BlockSizes | None = None,
    interpret: bool = True,
    greedy: bool = False,
) -> Int[Array, " k"]:
    """JEST joint example selection without the (B, B) score matrix.

    **Arguments:**

    - `key`, `n_select`, `n_chunks`, `greedy`: as in `joint_select`.
    - `learner`, `reference`: the two models' views of the super-batch; their
      embeddings and temperature/bias must be finite (a ValueError eagerly, an
      `eqx.error_if` failure under `jit`).
    - `score`: ``learnability``, ``easy_reference`` or ``hard_learner``.
    - `block`: kernel tile sizes (default `BlockSizes()`).
    - `interpret`: run the kernel in the Pallas interpreter (the only mode on
      CPU); ``False`` compiles it for the GPU.

    **Returns:** the same indices as ``joint_select(key, score_matrix(learner,
    reference, score, block=block), n_select, n_chunks)``: both paths compute
    every pair score on the same tile shape and sum exactly, so they agree bit
    for bit wherever the kernel runs through XLA (interpret mode). A compiled
    kernel rounds its products its own way and may break exact ties
    differently. Memory: O(B·D).
    """
    check_views(learner, reference, score)
    check_counts(learner.zimg.shape[0], n_select, n_chunks)
    learner = jax.tree.map(lambda x: check_finite(x, "learner embeddings, t and b"), learner)
    reference = jax.tree.map(lambda x: check_finite(x, "reference embeddings, t and b"), reference)
    block = BlockSizes() if block is None else block
    return _joint_select_blocked(
        key, learner, reference, score, n_select, n_chunks, block, interpret, greedy
    )
