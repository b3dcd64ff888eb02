"""Pallas kernel: row and column sums of pair scores over a chunk, in O(B·D) memory.

Joint example selection (JEST) grows a sub-batch chunk by chunk; after each
chunk Q the conditional logits of every candidate k gain
``sum_{q in Q} (S[k, q] + S[q, k])``, with ``S`` the (B, B) pair-score matrix
(learner pair loss minus reference pair loss, for ``learnability``). At real
super-batch sizes S does not fit (B = 65,536 is 17 GB per f32 matrix), so the
kernel rebuilds the needed tiles of S from the two models' embeddings: a grid
over row tiles of the super-batch, and inside it a loop over column tiles of
the chunk, each tile two (block_rows, D) x (D, block_cols) products per model.

Two choices make the blocked path reproduce the dense one bit for bit:

- Every pair score, in the kernel, its reference and the dense
  `pair_score_matrix`, comes from `pair_losses_tile` on a (block_rows, D) x
  (block_cols, D) tile. XLA's matmul may round an entry differently
  depending on the operands' shapes (it does on CPU), so the dense matrix is
  evaluated tile by tile with the same tile shape.
- The sums are exact: each score is split into an integer part and a
  fixed-point fraction (`fixed_point_split`), both summed in int32, so the
  result does not depend on summation order, tiling or the backend's
  reduction tree. With ``c`` terms the fraction keeps
  ``31 - c.bit_length()`` bits (truncation below 5e-7 per term for c = 819)
  and scores are clipped to as many bits of integer range (±2**21 for
  c = 819): ample for pair losses of a sane temperature and bias.

Layout in the manner of ``jax/experimental/pallas/ops/gpu/attention.py``: a
small kernel body, a jitted wrapper that builds the grid and `BlockSpec`s, and
`blocked_pair_score_sums_reference` in plain ``jnp``.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from beartype import beartype as typechecker
from jax.experimental import pallas as pl
from jaxtyping import Array, Float, Int, jaxtyped

from aced.kernels import compat
from aced.losses import sigmoid_pair_losses

SCORES = ("learnability", "easy_reference", "hard_learner")

# One model's view of the super-batch: (zimg, ztxt, temperature, bias).
Model = tuple[Array, Array, Array, Array]


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tile sizes of the pair-score kernel.

    **Arguments:**

    - `block_rows`: super-batch rows per grid step.
    - `block_cols`: chunk columns per inner-loop step.

    Both must be powers of two >= 16 (Triton's rule for block shapes), and
    `block_rows` a multiple of `block_cols`. The defaults suit interpret mode
    on CPU, where tall row tiles amortise the per-step cost (measured with
    ``benchmarks/selection.py``); a GPU wants smaller tiles, since each grid
    step holds ``4 * block_rows * D`` floats of row tiles (try
    ``BlockSizes(64, 32)``; not tuned here). The diagonal costs
    ``B * block_rows * D`` multiply-adds per model, so very tall tiles make it
    dearer.
    """

    block_rows: int = 512
    block_cols: int = 64

    def __post_init__(self):
        block_rows, block_cols = self.block_rows, self.block_cols
        if block_rows < 16 or block_rows & (block_rows - 1):
            raise ValueError(f"{block_rows=} must be a power of two >= 16")
        if block_cols < 16 or block_cols & (block_cols - 1):
            raise ValueError(f"{block_cols=} must be a power of two >= 16")
        if block_rows % block_cols:
            raise ValueError(f"{block_rows=} must be a multiple of {block_cols=}")


def check_score(score: str) -> None:
    """Raise a ValueError naming the valid scores unless `score` is one."""
    if score not in SCORES:
        raise ValueError(f"score={score!r} is unknown; use one of {', '.join(SCORES)}")


def models_for(score: str, learner: Model, reference: Model) -> tuple[Model, ...]:
    """The models a score needs, in the order `scores_from_losses` expects."""
    check_score(score)
    return {
        "learnability": (learner, reference),
        "easy_reference": (reference,),
        "hard_learner": (learner,),
    }[score]


def scores_from_losses(score: str, losses: tuple[Array, ...]) -> Array:
    """Pair scores from the per-pair losses of `models_for(score, ...)`."""
    if score == "learnability":
        return losses[0] - losses[1]
    if score == "easy_reference":
        return -losses[0]
    return losses[0]


def dot_nt(x: Float[Array, "m D"], y: Float[Array, "n D"]) -> Float[Array, "m n"]:
    """``x @ y.T`` as one ``dot_general``: (m, D) . (D, n) -> (m, n), f32 accumulation."""
    return jax.lax.dot_general(
        x,
        y,
        (((1,), (1,)), ((), ())),
        precision=jax.lax.Precision.HIGHEST,
        preferred_element_type=jnp.float32,
    )


def pair_losses_tile(
    zimg_rows: Float[Array, "m D"],
    ztxt_cols: Float[Array, "n D"],
    t: Float[Array, ""],
    b: Float[Array, ""],
    row_ids: Int[Array, " m"],
    col_ids: Int[Array, " n"],
) -> Float[Array, "m n"]:
    """SigLIP pair losses of one tile, the same formula as `sigmoid_pair_losses`.

    Pair (k, q) is positive iff the global indices agree, ``row_ids[k] ==
    col_ids[q]``. ``<zimg_q, ztxt_k>`` may also be computed as ``ztxt`` rows
    against ``zimg`` columns: XLA's products are symmetric in their operands.
    """
    logits = t * dot_nt(zimg_rows, ztxt_cols) + b
    labels = jnp.where(row_ids[:, None] == col_ids[None, :], 1.0, -1.0).astype(jnp.float32)
    return -jax.nn.log_sigmoid(labels * logits)


def fixed_point_bits(count: int) -> int:
    """Fraction bits that keep int32 sums of `count` split scores exact."""
    return 31 - max(count, 1).bit_length()


def fixed_point_split(
    values: Float[Array, "m n"], frac_bits: int
) -> tuple[Int[Array, "m n"], Int[Array, "m n"]]:
    """Split ``values ~= hi + lo * 2**-frac_bits`` with ``|lo| < 2**frac_bits``.

    Both parts are truncated toward zero, so the split loses less than
    ``2**-frac_bits`` per value and every step is exact in f32 (the integer
    part and the fraction of a float are floats). Values are clipped to
    ``±2**frac_bits`` so that sums of fewer than ``2**(31 - frac_bits)`` terms
    stay inside int32.
    """
    scale = float(2**frac_bits)
    clipped = jnp.clip(values, -scale, scale)
    hi = clipped.astype(jnp.int32)  # conversion truncates toward zero
    lo = ((clipped - hi.astype(jnp.float32)) * scale).astype(jnp.int32)
    return hi, lo


def fixed_point_value(
    hi: Int[Array, " m"], lo: Int[Array, " m"], frac_bits: int
) -> Float[Array, " m"]:
    """Back to f32 from summed `fixed_point_split` parts."""
    return hi.astype(jnp.float32) + lo.astype(jnp.float32) * float(2.0**-frac_bits)


def fixed_point_sum(values: Float[Array, "m n"], frac_bits: int) -> Float[Array, " m"]:
    """Row sums of `values`, exact up to the fixed-point rounding, in any order."""
    hi, lo = fixed_point_split(values, frac_bits)
    return fixed_point_value(hi.sum(axis=1), lo.sum(axis=1), frac_bits)


def _as_f32(model: Model) -> Model:
    return tuple(x.astype(jnp.float32) for x in model)  # type: ignore[return-value]


def _pad_rows(x: Array, rows: int, value=0) -> Array:
    pad = [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    return jnp.pad(x, pad, constant_values=value)


def _sums_kernel(
    params_ref,
    *refs,
    n_models: int,
    score: str,
    block_cols: int,
    n_col_tiles: int,
    frac_bits: int,
):
    """One row tile: loop over the chunk's column tiles, accumulate int32 sums.

    refs: per model (zimg rows, ztxt rows) as (block_rows, D); per model (zimg
    chunk, ztxt chunk) as (c_pad, D); chunk ids (c_pad,); then the outputs
    row_hi, row_lo, col_hi, col_lo, each (block_rows,).
    """
    row_refs = refs[: 2 * n_models]
    chunk_refs = refs[2 * n_models : 4 * n_models]
    ids_ref = refs[4 * n_models]
    row_hi_ref, row_lo_ref, col_hi_ref, col_lo_ref = refs[4 * n_models + 1 :]

    block_rows = row_refs[0].shape[0]
    row_ids = pl.program_id(0) * block_rows + jax.lax.broadcasted_iota(
        jnp.int32, (block_rows,), 0
    )
    rows = [(row_refs[2 * m][...], row_refs[2 * m + 1][...]) for m in range(n_models)]
    temps = [(params_ref[2 * m], params_ref[2 * m + 1]) for m in range(n_models)]

    def body(j, acc):
        cols = compat.dslice(j * block_cols, block_cols)
        col_ids = ids_ref[cols]
        valid = (col_ids >= 0)[None, :]
        losses_row, losses_col = [], []
        for m in range(n_models):
            zimg_chunk, ztxt_chunk = chunk_refs[2 * m][cols, :], chunk_refs[2 * m + 1][cols, :]
            # S[k, q]: image k (row) against text q (chunk).
            losses_row.append(pair_losses_tile(rows[m][0], ztxt_chunk, *temps[m], row_ids, col_ids))
            # S[q, k]: image q (chunk) against text k (row), as <ztxt_k, zimg_q>.
            losses_col.append(pair_losses_tile(rows[m][1], zimg_chunk, *temps[m], row_ids, col_ids))
        s_row = scores_from_losses(score, tuple(losses_row))  # (block_rows, block_cols)
        s_col = scores_from_losses(score, tuple(losses_col))
        parts = (
            *fixed_point_split(jnp.where(valid, s_row, 0.0), frac_bits),
            *fixed_point_split(jnp.where(valid, s_col, 0.0), frac_bits),
        )
        return tuple(a + p.sum(axis=1) for a, p in zip(acc, parts))

    zeros = jnp.zeros((block_rows,), jnp.int32)
    row_hi, row_lo, col_hi, col_lo = jax.lax.fori_loop(0, n_col_tiles, body, (zeros,) * 4)
    row_hi_ref[...] = row_hi
    row_lo_ref[...] = row_lo
    col_hi_ref[...] = col_hi
    col_lo_ref[...] = col_lo


@functools.partial(jax.jit, static_argnames=("score", "block", "interpret"))
def _pair_score_sums(
    models: tuple[Model, ...], chunk: Array, score: str, block: BlockSizes, interpret: bool
) -> tuple[Array, Array]:
    n = models[0][0].shape[0]
    block_rows, block_cols = block.block_rows, block.block_cols
    n_row_tiles = pl.cdiv(n, block_rows)
    n_col_tiles = pl.cdiv(chunk.shape[0], block_cols)
    frac_bits = fixed_point_bits(chunk.shape[0])
    chunk = chunk.astype(jnp.int32)
    ids = _pad_rows(chunk, n_col_tiles * block_cols, value=-1)

    row_arrays, chunk_arrays, params = [], [], []
    for zimg, ztxt, t, b in map(_as_f32, models):
        if not interpret:
            # Triton loads need power-of-two widths; zero columns leave dots unchanged.
            width = pl.next_power_of_2(zimg.shape[1])
            zimg, ztxt = (jnp.pad(z, ((0, 0), (0, width - z.shape[1]))) for z in (zimg, ztxt))
        row_arrays += [_pad_rows(z, n_row_tiles * block_rows) for z in (zimg, ztxt)]
        chunk_arrays += [_pad_rows(z[chunk], n_col_tiles * block_cols) for z in (zimg, ztxt)]
        params += [t, b]
    params = jnp.stack(params)

    def rows_spec(x):
        return compat.block_spec((block_rows, x.shape[1]), lambda i: (i, 0))

    def whole_spec(x):
        return compat.block_spec(x.shape, lambda i: (0,) * x.ndim)

    out_spec = compat.block_spec((block_rows,), lambda i: (i,))
    kernel = functools.partial(
        _sums_kernel,
        n_models=len(models),
        score=score,
        block_cols=block_cols,
        n_col_tiles=n_col_tiles,
        frac_bits=frac_bits,
    )
    on_gpu = not interpret and jax.default_backend() == "gpu"
    row_hi, row_lo, col_hi, col_lo = pl.pallas_call(
        kernel,
        out_shape=[jax.ShapeDtypeStruct((n_row_tiles * block_rows,), jnp.int32)] * 4,
        grid=(n_row_tiles,),
        in_specs=[whole_spec(params)]
        + [rows_spec(x) for x in row_arrays]
        + [whole_spec(x) for x in chunk_arrays]
        + [whole_spec(ids)],
        out_specs=[out_spec] * 4,
        interpret=interpret,
        compiler_params=compat.triton_compiler_params(4, 2) if on_gpu else None,
        name="pair_score_sums",
    )(params, *row_arrays, *chunk_arrays, ids)
    row_sums = fixed_point_value(row_hi, row_lo, frac_bits)[:n]
    col_sums = fixed_point_value(col_hi, col_lo, frac_bits)[:n]
    return row_sums, col_sums


def _check_models(learner: Model, reference: Model) -> None:
    for name, (zimg, ztxt, _, _) in (("learner", learner), ("reference", reference)):
        if zimg.shape != ztxt.shape:
            raise ValueError(
                f"{name} zimg {zimg.shape} and ztxt {ztxt.shape} must have the same shape (B, D)"
            )
    if learner[0].shape[0] != reference[0].shape[0]:
        raise ValueError(
            f"learner and reference must embed the same super-batch: "
            f"B={learner[0].shape[0]} vs B={reference[0].shape[0]}"
        )


@jaxtyped(typechecker=typechecker)
def blocked_pair_score_sums(
    learner_zimg: Float[Array, "B Dl"],
    learner_ztxt: Float[Array, "B Dl"],
    learner_t: Float[Array, ""],
    learner_b: Float[Array, ""],
    reference_zimg: Float[Array, "B Dr"],
    reference_ztxt: Float[Array, "B Dr"],
    reference_t: Float[Array, ""],
    reference_b: Float[Array, ""],
    chunk: Int[Array, " c"],
    score: str,
    *,
    block: BlockSizes | None = None,
    interpret: bool = True,
) -> tuple[Float[Array, " B"], Float[Array, " B"]]:
    """Row and column sums of the pair scores over a chunk, never forming B x B.

    **Arguments:**

    - `learner_*`, `reference_*`: each model's L2-normalised image and text
      embeddings of the super-batch (widths may differ between the models),
      its temperature (not its log) and bias.
    - `chunk`: global indices q of the chunk's examples, in [0, B).
    - `score`: one of `SCORES`; the pair score S is ``learner loss - reference
      loss``, ``-reference loss`` or ``learner loss``.
    - `block`: tile sizes (default `BlockSizes()`).
    - `interpret`: run the kernel in the Pallas interpreter; the only mode on
      CPU. ``False`` compiles it (Triton on GPU).

    **Returns:** ``(row_sums, col_sums)``, each (B,): ``row_sums[k] = sum_{q in
    chunk} S[k, q]`` and ``col_sums[k] = sum_{q in chunk} S[q, k]``, summed
    exactly in fixed point with ``31 - len(chunk).bit_length()`` fraction bits.
    """
    learner = (learner_zimg, learner_ztxt, learner_t, learner_b)
    reference = (reference_zimg, reference_ztxt, reference_t, reference_b)
    models, block = _prepare(learner, reference, score, block)
    if not interpret and jax.default_backend() == "cpu":
        raise ValueError("interpret=False needs a GPU; on CPU pass interpret=True")
    if not isinstance(chunk, jax.core.Tracer):
        if chunk.size and (int(chunk.min()) < 0 or int(chunk.max()) >= learner_zimg.shape[0]):
            raise ValueError(f"chunk indices must lie in [0, B={learner_zimg.shape[0]})")
    return _pair_score_sums(models, chunk, score, block, interpret)


@jaxtyped(typechecker=typechecker)
def blocked_pair_score_sums_reference(
    learner_zimg: Float[Array, "B Dl"],
    learner_ztxt: Float[Array, "B Dl"],
    learner_t: Float[Array, ""],
    learner_b: Float[Array, ""],
    reference_zimg: Float[Array, "B Dr"],
    reference_ztxt: Float[Array, "B Dr"],
    reference_t: Float[Array, ""],
    reference_b: Float[Array, ""],
    chunk: Int[Array, " c"],
    score: str,
) -> tuple[Float[Array, " B"], Float[Array, " B"]]:
    """`blocked_pair_score_sums` the plain way: the dense matrix, then f32 sums."""
    learner = (learner_zimg, learner_ztxt, learner_t, learner_b)
    reference = (reference_zimg, reference_ztxt, reference_t, reference_b)
    return _pair_score_sums_reference(models_for(score, learner, reference), chunk, score)


@functools.partial(jax.jit, static_argnames=("score",))
def _pair_score_sums_reference(models: tuple[Model, ...], chunk: Array, score: str):
    losses = tuple(sigmoid_pair_losses(*_as_f32(model)) for model in models)
    scores = scores_from_losses(score, losses)  # (B, B)
    return scores[:, chunk].sum(axis=1), scores[chunk, :].sum(axis=0)


def _tiled(models: tuple[Model, ...], size: int, block: BlockSizes) -> tuple:
    """Row tiles of zimg and column tiles of ztxt per model, plus global ids."""
    block_rows, block_cols = block.block_rows, block.block_cols
    n_rows = -(-size // block_rows) * block_rows
    n_cols = -(-size // block_cols) * block_cols
    tiles = []
    for zimg, ztxt, t, b in map(_as_f32, models):
        tiles.append(
            (
                _pad_rows(zimg, n_rows).reshape(n_rows // block_rows, block_rows, -1),
                _pad_rows(ztxt, n_cols).reshape(n_cols // block_cols, block_cols, -1),
                t,
                b,
            )
        )
    row_ids = jnp.arange(n_rows, dtype=jnp.int32).reshape(-1, block_rows)
    col_ids = jnp.arange(n_cols, dtype=jnp.int32).reshape(-1, block_cols)
    return tiles, row_ids, col_ids


@functools.partial(jax.jit, static_argnames=("score", "block"))
def _pair_score_matrix(models: tuple[Model, ...], score: str, block: BlockSizes) -> Array:
    size = models[0][0].shape[0]
    tiles, row_ids, col_ids = _tiled(models, size, block)

    def row_tile(i):
        def col_tile(j):
            losses = tuple(
                pair_losses_tile(rows[i], cols[j], t, b, row_ids[i], col_ids[j])
                for rows, cols, t, b in tiles
            )
            return scores_from_losses(score, losses)  # (block_rows, block_cols)

        strip = jax.lax.map(col_tile, jnp.arange(col_ids.shape[0]))  # (nc, br, bc)
        return strip.transpose(1, 0, 2).reshape(block.block_rows, -1)

    matrix = jax.lax.map(row_tile, jnp.arange(row_ids.shape[0]))  # (nr, br, nc * bc)
    return matrix.reshape(-1, matrix.shape[-1])[:size, :size]


@functools.partial(jax.jit, static_argnames=("score", "block"))
def _pair_score_diagonal(models: tuple[Model, ...], score: str, block: BlockSizes) -> Array:
    size = models[0][0].shape[0]
    block_rows, block_cols = block.block_rows, block.block_cols
    n_sub = block_rows // block_cols
    n_rows = -(-size // block_rows) * block_rows
    # Column tiles aligned with row tiles: row tile i holds column tiles i * n_sub + s.
    tiles, row_ids, col_ids = _tiled(models, n_rows, block)
    diag = jnp.arange(block_cols)

    def tile(ij):
        i, s = ij // n_sub, ij % n_sub
        j = i * n_sub + s
        losses = tuple(
            pair_losses_tile(rows[i], cols[j], t, b, row_ids[i], col_ids[j])
            for rows, cols, t, b in tiles
        )
        scores = scores_from_losses(score, losses)  # (block_rows, block_cols)
        return scores[s * block_cols + diag, diag]  # entries (k, k) of this tile

    return jax.lax.map(tile, jnp.arange(row_ids.shape[0] * n_sub)).reshape(-1)[:size]


def _prepare(
    learner: Model, reference: Model, score: str, block: BlockSizes | None
) -> tuple[tuple[Model, ...], BlockSizes]:
    check_score(score)
    _check_models(learner, reference)
    return models_for(score, learner, reference), BlockSizes() if block is None else block


@jaxtyped(typechecker=typechecker)
def pair_score_matrix(
    learner_zimg: Float[Array, "B Dl"],
    learner_ztxt: Float[Array, "B Dl"],
    learner_t: Float[Array, ""],
    learner_b: Float[Array, ""],
    reference_zimg: Float[Array, "B Dr"],
    reference_ztxt: Float[Array, "B Dr"],
    reference_t: Float[Array, ""],
    reference_b: Float[Array, ""],
    score: str,
    *,
    block: BlockSizes | None = None,
) -> Float[Array, "B B"]:
    """The dense (B, B) pair-score matrix, evaluated tile by tile (plain jnp).

    Same arguments as `blocked_pair_score_sums`, without the chunk. Each entry
    comes from a `block`-shaped tile, so it equals bit for bit the value the
    kernel computes with the same `block`. Memory: O(B^2).
    """
    learner = (learner_zimg, learner_ztxt, learner_t, learner_b)
    reference = (reference_zimg, reference_ztxt, reference_t, reference_b)
    models, block = _prepare(learner, reference, score, block)
    return _pair_score_matrix(models, score, block)


@jaxtyped(typechecker=typechecker)
def pair_score_diagonal(
    learner_zimg: Float[Array, "B Dl"],
    learner_ztxt: Float[Array, "B Dl"],
    learner_t: Float[Array, ""],
    learner_b: Float[Array, ""],
    reference_zimg: Float[Array, "B Dr"],
    reference_ztxt: Float[Array, "B Dr"],
    reference_t: Float[Array, ""],
    reference_b: Float[Array, ""],
    score: str,
    *,
    block: BlockSizes | None = None,
) -> Float[Array, " B"]:
    """The diagonal ``S[k, k]`` of `pair_score_matrix` in O(B·D) memory (plain jnp).

    Each row tile is multiplied by the `block_cols`-wide column tiles that hold
    its own examples, block_rows / block_cols products of the kernel's tile
    shape, so the values equal the dense matrix's diagonal bit for bit.
    Compute: B · block_rows · D per model, small beside one selection.
    """
    learner = (learner_zimg, learner_ztxt, learner_t, learner_b)
    reference = (reference_zimg, reference_ztxt, reference_t, reference_b)
    models, block = _prepare(learner, reference, score, block)
    return _pair_score_diagonal(models, score, block)
