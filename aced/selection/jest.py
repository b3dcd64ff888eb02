"""Joint example selection (JEST, Evans et al. 2024, arXiv 2406.17711).

The sub-batch is built in ``n_chunks`` chunks of ``c = n_select / n_chunks``
examples. The first chunk is drawn without replacement from
``softmax(diag S)``; each later chunk from
``softmax(S_kk + sum_{q in Q} (S_qk + S_kq))`` over the examples k not yet in
Q, which is exactly the change of the sub-batch score ``sum_{i,j in Q} S_ij``
when k joins Q. Drawing c without replacement from a softmax is Gumbel top-k:
``top_k(logits + Gumbel noise, c)``.

How a chunk is drawn from its conditional logits is a `SelectionRule`, one
entry of the `SELECTION_RULES` registry, shared by the dense and the blocked
path through `select_chunks`:

- ``jest``: Gumbel top-k sampling (JEST; the default);
- ``greedy``: the chunk's top logits, no noise;
- ``independent``, ``independent_greedy``: the non-joint baseline, one draw
  of the whole sub-batch from ``diag S`` (JEST's ablation).

Randomness and arithmetic are shared with the blocked path
(`aced.selection.joint_select_blocked`): chunk i draws noise of shape (B,)
from ``fold_in(key, i)``, and after each chunk the logits gain the row and
column sums of S over the new chunk, summed exactly in fixed point
(`aced.kernels.fixed_point_sum`). Both paths therefore return the same
indices for the same key.
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from beartype import beartype as typechecker
from jaxtyping import Array, Float, Int, PRNGKeyArray, jaxtyped

from aced.kernels import fixed_point_bits, fixed_point_sum
from aced.registry import lookup, register
from aced.selection.checks import check_counts, require_finite

# (chunk indices) -> (row sums, column sums) of S over the chunk, each (B,).
ChunkSums = Callable[[Array], tuple[Array, Array]]
# (key, logits (B,) with chosen examples at -inf, examples chosen so far, k) -> k indices.
Draw = Callable[[PRNGKeyArray, Array, Array, int], Array]


def sample_top_k(key: PRNGKeyArray, logits: Float[Array, " B"], k: int) -> Int[Array, " k"]:
    """k indices without replacement from ``softmax(logits)``: Gumbel top-k."""
    logits = logits + jax.random.gumbel(key, logits.shape, jnp.float32)
    return jax.lax.top_k(logits, k)[1].astype(jnp.int32)


def greedy_top_k(key: PRNGKeyArray, logits: Float[Array, " B"], k: int) -> Int[Array, " k"]:
    """The k largest logits (the key is unused)."""
    del key
    return jax.lax.top_k(logits, k)[1].astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class SelectionRule:
    """How each chunk of the sub-batch is drawn.

    **Fields:**

    - `draw`: ``(key, logits, n_chosen, k) -> k indices``: k distinct indices
      from the (B,) conditional logits, where examples already chosen are
      ``-inf``; `n_chosen` (a traced int32) is how many are chosen so far.
    - `joint`: True: the chunks see each other (JEST's conditional logits,
      ``S_kk + sum_q (S_qk + S_kq)``); False: the whole sub-batch is one draw
      from the diagonal ``S_kk`` (no B x B matrix or kernel is needed).
    - `about`: one line for ``aced train --help``.
    - `sampled_from`: ``(logits, n_chosen) -> logits`` whose softmax the draw
      samples from, for the effective-support diagnostic
      (`aced.selection.chunk_supports`); None when the draw is not such a
      sample (greedy) or does not say, and then no support is reported.
    """

    draw: Draw
    joint: bool = True
    about: str = ""
    sampled_from: Callable[[Array, Array], Array] | None = None


def _jest(key, logits, n_chosen, k):
    return sample_top_k(key, logits, k)


def _greedy(key, logits, n_chosen, k):
    return greedy_top_k(key, logits, k)


def _as_is(logits, n_chosen):
    return logits


def _normalised(logits, n_chosen):
    # The conditional logits are sums over the 2|Q| + 1 terms an example adds to the
    # sub-batch (its row, its column, its diagonal): their mean keeps one scale in every chunk.
    return logits / (2 * n_chosen + 1).astype(logits.dtype)


def _jest_normalised(key, logits, n_chosen, k):
    return sample_top_k(key, _normalised(logits, n_chosen), k)


SELECTION_RULES: dict[str, SelectionRule] = {
    "jest": SelectionRule(
        _jest, True, "JEST: each chunk sampled from softmax of its logits", _as_is
    ),
    "greedy": SelectionRule(_greedy, True, "each chunk the top conditional logits (no noise)"),
    "jest_normalised": SelectionRule(
        _jest_normalised, True, "JEST with each chunk's logits divided by 2|Q| + 1", _normalised
    ),
    "independent": SelectionRule(_jest, False, "one draw from softmax(diag S): not joint", _as_is),
    "independent_greedy": SelectionRule(_greedy, False, "the top of diag S: not joint"),
}


def register_selection_rule(
    name: str, rule: SelectionRule, *, overwrite: bool = False
) -> SelectionRule:
    """Register `rule` as `name` for ``step.selection.rule`` and both selection paths."""
    return register(SELECTION_RULES, "selection rule", name, rule, overwrite=overwrite)


def selection_rule(rule: "str | SelectionRule") -> SelectionRule:
    """The registered `SelectionRule` named `rule` (an entry passes through)."""
    return lookup(SELECTION_RULES, "selection rule", rule)


def select_chunks(
    key: PRNGKeyArray,
    diagonal: Float[Array, " B"],
    chunk_sums: ChunkSums,
    n_select: int,
    n_chunks: int,
    rule: SelectionRule,
) -> Int[Array, " k"]:
    """The JEST loop, shared by the dense and the blocked path.

    **Arguments:**

    - `key`: chunk i uses ``fold_in(key, i)``.
    - `diagonal`: ``S_kk``, the first chunk's logits.
    - `chunk_sums`: maps a chunk's indices to ``(sum_q S_kq, sum_q S_qk)``;
      never called for a rule that is not joint.
    - `n_select`, `n_chunks`: as in `joint_select` (a rule that is not joint
      draws all n_select at once, as one chunk).
    - `rule`: how each chunk is drawn.

    **Returns:** the n_select indices, chunk after chunk.
    """
    size = diagonal.shape[0]
    n_chunks = n_chunks if rule.joint else 1
    chunk = n_select // n_chunks

    def draw(i, logits, selected):
        logits = jnp.where(selected, -jnp.inf, logits)
        n_chosen = jnp.asarray(i * chunk, jnp.int32)
        return rule.draw(jax.random.fold_in(key, i), logits, n_chosen, chunk)

    logits = diagonal.astype(jnp.float32)
    first = draw(0, logits, jnp.zeros((size,), bool))
    out = jnp.zeros((n_select,), jnp.int32).at[:chunk].set(first)
    selected = jnp.zeros((size,), bool).at[first].set(True)

    def step(i, carry):
        logits, selected, out, last = carry
        row_sums, col_sums = chunk_sums(last)
        logits = logits + row_sums + col_sums
        new = draw(i, logits, selected)
        out = jax.lax.dynamic_update_slice(out, new, (i * chunk,))
        return logits, selected.at[new].set(True), out, new

    return jax.lax.fori_loop(1, n_chunks, step, (logits, selected, out, first))[2]


def dense_chunk_sums(scores: Float[Array, "B B"], n_select: int, n_chunks: int) -> ChunkSums:
    """`ChunkSums` from a dense score matrix: gather the chunk's columns and rows."""
    frac_bits = fixed_point_bits(n_select // n_chunks)

    def sums(chunk):
        row_sums = fixed_point_sum(scores[:, chunk], frac_bits)  # (B, c) -> (B,)
        col_sums = fixed_point_sum(scores[chunk, :].T, frac_bits)  # (c, B) -> (B,)
        return row_sums, col_sums

    return sums


def dense_terms(
    scores: Float[Array, "B B"], n_select: int, n_chunks: int
) -> tuple[Float[Array, " B"], ChunkSums]:
    """The diagonal and the `ChunkSums` that `select_chunks` reads, from a dense matrix."""
    scores = scores.astype(jnp.float32)
    return jnp.diagonal(scores), dense_chunk_sums(scores, n_select, n_chunks)


@functools.partial(jax.jit, static_argnames=("n_select", "n_chunks", "rule"))
def _joint_select(key, scores, n_select, n_chunks, rule):
    diagonal, sums = dense_terms(scores, n_select, n_chunks)
    return select_chunks(key, diagonal, sums, n_select, n_chunks, rule)


@jaxtyped(typechecker=typechecker)
def joint_select(
    key: PRNGKeyArray,
    scores: Float[Array, "B B"],
    n_select: int,
    n_chunks: int,
    *,
    rule: "str | SelectionRule" = "jest",
    check_finite: bool = True,
) -> Int[Array, " k"]:
    """JEST joint example selection from a dense pair-score matrix.

    **Arguments:**

    - `key`: PRNG key; the same key gives the same indices.
    - `scores`: ``S``, (B, B), e.g. from `score_matrix`. Must be finite: a
      ValueError when called eagerly, an `eqx.error_if` failure under `jit`.
      Entries beyond the fixed-point range (about ``±2**(31 - c.bit_length())``,
      c the chunk size) are clipped in the conditional sums.
    - `n_select`: sub-batch size b, at most B and a multiple of `n_chunks`.
    - `n_chunks`: number of chunks (JEST uses 16); ``n_chunks = 1`` is
      independent selection on ``diag S``.
    - `rule`: a name of `SELECTION_RULES` or a `SelectionRule`: how each chunk
      is drawn (default ``jest``: sampled; ``greedy``: the top logits).
    - `check_finite`: reject non-finite `scores` (the default). Under `jit` the
      check is a host callback, which keeps the program out of JAX's persistent
      compilation cache; pass False where the caller checks the scores another way
      (aced's train step: non-finite scores make its ``score/*`` metrics non-finite,
      and ``aced train`` stops on them).

    `n_select`, `n_chunks`, `rule` and `check_finite` are static under `jit`.

    **Returns:** n_select distinct int32 indices into the super-batch, chunk by
    chunk (within a chunk in decreasing perturbed logit).
    """
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be square (B, B); got shape {scores.shape}")
    rule = selection_rule(rule)
    check_counts(scores.shape[0], n_select, n_chunks, chunk_sums=rule.joint)
    scores = require_finite(scores, "scores", check_finite)
    return _joint_select(key, scores, n_select, n_chunks, rule)


@jaxtyped(typechecker=typechecker)
def independent_select(
    key: PRNGKeyArray,
    per_example_scores: Float[Array, " B"],
    n_select: int,
    *,
    rule: "str | SelectionRule" = "independent",
    check_finite: bool = True,
) -> Int[Array, " k"]:
    """The non-joint baseline: n_select draws without replacement from ``softmax(scores)``.

    **Arguments:**

    - `key`: PRNG key, used as chunk 0 of `joint_select` uses it, so
      ``independent_select(key, diag(S), b) == joint_select(key, S, b, 1)``.
    - `per_example_scores`: one score per example. JEST's ablation scores each
      example alone: pass ``diag(S)``, the example's own pair score (its score
      as a batch of one).
    - `n_select`: how many to take, in [1, B].
    - `rule`: how the draw is made (its `draw`; `joint` does not matter here):
      ``independent`` samples, ``independent_greedy`` takes the top scores.
    - `check_finite`: as in `joint_select`.

    **Returns:** n_select distinct int32 indices, by decreasing perturbed score.
    """
    rule = selection_rule(rule)
    check_counts(per_example_scores.shape[0], n_select, 1, chunk_sums=False)
    per_example_scores = require_finite(per_example_scores, "per_example_scores", check_finite)
    logits = per_example_scores.astype(jnp.float32)
    n_chosen = jnp.zeros((), jnp.int32)
    return rule.draw(jax.random.fold_in(key, 0), logits, n_chosen, n_select)
