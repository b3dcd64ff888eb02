"""What a selection did, measured after the fact: never fed back to the selection.

- `effective_support`: ``1 / sum p^2`` of a softmax, the number of candidates
  a draw effectively chooses among (B for equal logits, 1 when one dominates).
- `chunk_supports`: replays `aced.selection.select_chunks` on the indices it
  returned and gives each chunk's effective support. JEST's conditional
  logits are sums over the growing sub-batch, so their spread grows with |Q|
  and later chunks become nearly greedy; this makes that visible.
- `selection_terms`: the diagonal and chunk sums a selection path reads
  (dense matrix or blocked kernel), for the replay.
"""

import jax
import jax.numpy as jnp
from beartype import beartype as typechecker
from jaxtyping import Array, Float, Int, jaxtyped

from aced.kernels import BlockSizes, default_blocks, resolve_interpret
from aced.selection.blocked import blocked_terms
from aced.selection.jest import ChunkSums, SelectionRule, dense_terms, selection_rule
from aced.selection.scores import PairScore, pair_score, score_matrix
from aced.types import Embedded


@jaxtyped(typechecker=typechecker)
def effective_support(logits: Float[Array, " B"]) -> Float[Array, ""]:
    """``1 / sum_k p_k^2`` for ``p = softmax(logits)``; ``-inf`` entries take no part."""
    p = jax.nn.softmax(logits.astype(jnp.float32))
    return 1.0 / jnp.sum(p * p)


def selection_terms(
    learner: Embedded,
    reference: Embedded,
    score: "str | PairScore",
    n_select: int,
    n_chunks: int,
    *,
    blocked: bool,
    block: BlockSizes | None = None,
    interpret: bool | None = None,
) -> tuple[Float[Array, " B"], ChunkSums]:
    """The diagonal ``S_kk`` and the `ChunkSums` that the selection read (dense or blocked);
    `block` defaults as in `joint_select_blocked` (`aced.kernels.default_blocks`)."""
    entry = pair_score(score)
    block = default_blocks(resolve_interpret(interpret)) if block is None else block
    if blocked:
        return blocked_terms(entry.views(learner, reference), entry.combine, block, interpret)
    return dense_terms(score_matrix(learner, reference, entry, block=block), n_select, n_chunks)


def chunk_supports(
    diagonal: Float[Array, " B"],
    chunk_sums: ChunkSums | None,
    indices: Int[Array, " k"],
    n_chunks: int,
    rule: "str | SelectionRule",
) -> Float[Array, " n"]:
    """Each chunk's effective support, replayed from the indices a selection returned.

    **Arguments:**

    - `diagonal`, `chunk_sums`: what the selection read (`selection_terms`);
      `chunk_sums` may be None for a single chunk (a rule that is not joint).
    - `indices`: the selection's output, chunk after chunk (as `joint_select`,
      `joint_select_blocked` and `independent_select` return them).
    - `n_chunks`: as given to the selection (a rule that is not joint draws
      one chunk).
    - `rule`: the rule that drew them; it must say what it samples from
      (`SelectionRule.sampled_from`).

    **Returns:** (n_chunks,) the effective support of chunk i's sampling
    distribution over the examples not yet chosen, exactly the logits
    `select_chunks` drew chunk i from.
    """
    rule = selection_rule(rule)
    if rule.sampled_from is None:
        raise ValueError(
            "this selection rule does not say what it samples from (SelectionRule.sampled_from "
            "is None: a greedy draw has no sampling distribution), so it has no support"
        )
    n_chunks = n_chunks if rule.joint else 1
    if indices.shape[0] % n_chunks:
        raise ValueError(f"{indices.shape[0]} indices do not split into {n_chunks=}")
    chunk = indices.shape[0] // n_chunks

    def support(i, logits, selected):
        masked = jnp.where(selected, -jnp.inf, logits)
        return effective_support(rule.sampled_from(masked, jnp.asarray(i * chunk, jnp.int32)))

    def step(i, carry):
        logits, selected, out = carry
        last = jax.lax.dynamic_slice(indices, ((i - 1) * chunk,), (chunk,))
        row_sums, col_sums = chunk_sums(last)
        logits = logits + row_sums + col_sums
        out = out.at[i].set(support(i, logits, selected))
        new = jax.lax.dynamic_slice(indices, (i * chunk,), (chunk,))
        return logits, selected.at[new].set(True), out

    logits = diagonal.astype(jnp.float32)
    none = jnp.zeros(diagonal.shape, bool)
    out = jnp.zeros((n_chunks,), jnp.float32).at[0].set(support(0, logits, none))
    if n_chunks == 1:  # one draw: no chunk sums are read (a rule that is not joint has none)
        return out
    selected = none.at[indices[:chunk]].set(True)
    return jax.lax.fori_loop(1, n_chunks, step, (logits, selected, out))[2]
