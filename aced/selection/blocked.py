"""Joint example selection at scale: the JEST loop on the Pallas pair-score kernel.

Same algorithm, randomness and arithmetic as `aced.selection.joint_select`,
but the (B, B) score matrix is never formed: the diagonal comes from
`aced.kernels.tiled_pair_score_diagonal` and each chunk's row and column sums
from the kernel `aced.kernels.blocked_pair_score_sums`, both O(B·D) in memory.
"""

import functools

import jax
from beartype import beartype as typechecker
from jaxtyping import Array, Int, PRNGKeyArray, jaxtyped

from aced.kernels import (
    BlockSizes,
    blocked_pair_score_sums,
    default_blocks,
    resolve_interpret,
    tiled_pair_score_diagonal,
)
from aced.selection.jest import (
    ChunkSums,
    SelectionRule,
    check_counts,
    require_finite,
    select_chunks,
    selection_rule,
)
from aced.selection.scores import PairScore, pair_score
from aced.types import Embedded, check_views


@functools.partial(
    jax.jit, static_argnames=("combine", "n_select", "n_chunks", "block", "interpret", "rule")
)
def _joint_select_blocked(key, views, combine, n_select, n_chunks, block, interpret, rule):
    diagonal, chunk_sums = blocked_terms(views, combine, block, interpret)
    return select_chunks(key, diagonal, chunk_sums, n_select, n_chunks, rule)


def blocked_terms(
    views, combine, block: BlockSizes, interpret: bool | None
) -> tuple[Array, ChunkSums]:
    """The diagonal and the `ChunkSums` that `select_chunks` reads, from the kernel:
    a `PairScore`'s `views` of the two models and its `combine`."""
    diagonal = tiled_pair_score_diagonal(views, combine, block)

    def chunk_sums(chunk):
        return blocked_pair_score_sums(views, combine, chunk, block=block, interpret=interpret)

    return diagonal, chunk_sums


@jaxtyped(typechecker=typechecker)
def joint_select_blocked(
    key: PRNGKeyArray,
    learner: Embedded,
    reference: Embedded,
    score: "str | PairScore",
    n_select: int,
    n_chunks: int,
    *,
    block: BlockSizes | None = None,
    interpret: bool | None = None,
    rule: "str | SelectionRule" = "jest",
    check_finite: bool = True,
) -> Int[Array, " k"]:
    """JEST joint example selection without the (B, B) score matrix.

    **Arguments:**

    - `key`, `n_select`, `n_chunks`, `rule`, `check_finite`: as in `joint_select`.
    - `learner`, `reference`: the two models' views of the super-batch; their
      embeddings and temperature/bias must be finite (a ValueError eagerly, an
      `eqx.error_if` failure under `jit`; unchecked with ``check_finite=False``).
    - `score`: a name of `aced.selection.PAIR_SCORES` or a `PairScore`.
    - `block`: kernel tile sizes and product precision (default
      `aced.kernels.default_blocks`: `BlockSizes()` interpreted, `GPU_BLOCKS`
      compiled).
    - `interpret`: run the kernel in the Pallas interpreter (the only mode on
      CPU); ``False`` compiles it for the GPU; ``None`` (the default): the
      interpreter on CPU, compiled elsewhere (`aced.kernels.resolve_interpret`).

    **Returns:** the same indices as ``joint_select(key, score_matrix(learner,
    reference, score, block=block), n_select, n_chunks, rule=rule)``: both
    paths compute every pair score on the same tile shape and sum exactly, so
    they agree bit for bit wherever the kernel runs through XLA (interpret
    mode). A compiled kernel rounds its products its own way and may break
    exact ties differently. Memory: O(B·D).
    """
    entry, rule = pair_score(score), selection_rule(rule)
    check_views(learner, reference)
    check_counts(learner.zimg.shape[0], n_select, n_chunks, chunk_sums=rule.joint)

    def finite(view: Embedded, name: str) -> Embedded:
        what = f"{name} embeddings, t and b"
        return jax.tree.map(lambda x: require_finite(x, what, check_finite), view)

    learner, reference = finite(learner, "learner"), finite(reference, "reference")
    interpret = resolve_interpret(interpret)
    block = default_blocks(interpret) if block is None else block
    views = entry.views(learner, reference)
    return _joint_select_blocked(
        key, views, entry.combine, n_select, n_chunks, block, interpret, rule
    )
