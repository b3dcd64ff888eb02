"""Pallas kernel: row and column sums of pair scores over a chunk, in O(B·D) memory.

Joint example selection (JEST) grows a sub-batch chunk by chunk; after each
chunk Q the conditional logits of every candidate k gain
``sum_{q in Q} (S[k, q] + S[q, k])``, with ``S`` the (B, B) pair-score matrix.
At real super-batch sizes S does not fit (B = 65,536 is 17 GB per f32
matrix), so the kernel rebuilds the needed tiles of S from the views'
embeddings: a grid over row tiles of the super-batch, and inside it a loop
over column tiles of the chunk, each tile two (block_rows, D) x (D,
block_cols) products per view, combined into scores by the score's `combine`
function (a static argument, as Pallas' attention op takes ``causal``).

Memory per program: each inner step loads a ``block_d``-wide slice of its
row tile and chunk tile at a time and accumulates the tile's logits over the
slices (`aced.kernels.tiling.tile_logits`), so a program holds
`aced.kernels.tiling.program_bytes` of tiles, independent of the chunk's
length and, with ``block_d`` set, of the width D. A compiled kernel checks
this against `PROGRAM_BUDGET_BYTES` (a ValueError names smaller blocks) and
uses `GPU_BLOCKS` unless told otherwise; the chunk and row arrays stay in
device memory and are indexed per step.

Every tile comes from `aced.kernels.tiling.pair_losses_tile`, and the sums are
exact (`aced.kernels.fixed_point`), so the kernel reproduces the dense path
bit for bit wherever it runs through XLA. With ``c`` terms the fraction keeps
``31 - c.bit_length()`` bits (truncation below 5e-7 per term for c = 819) and
scores are clipped to as many bits of integer range (±2**21 for c = 819):
ample for pair losses of a sane temperature and bias.

Compiled for an NVIDIA GPU this kernel goes through Pallas' Triton backend;
on a Hopper GPU `BlockSizes.gpu_lowering` (``"auto"``) routes the same sums to
the Mosaic GPU kernel, `aced.kernels.pair_scores_mgpu` (`resolve_gpu_lowering`).

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
from aced.kernels.fixed_point import fixed_point_split, fixed_point_value
from aced.kernels.tiling import (
    GPU_BLOCKS,
    BlockSizes,
    Combine,
    as_f32,
    check_program_bytes,
    pad_rows,
    pad_width,
    padded_chunk,
    pair_losses_tile,
    tile_logits,
)
from aced.losses import sigmoid_pair_losses
from aced.types import Embedded, check_views


def _sums_kernel(
    params_ref,
    *refs,
    n_views: int,
    combine: Combine,
    block: BlockSizes,
    n_col_tiles: int,
    frac_bits: int,
):
    """One row tile: loop over the chunk's column tiles, accumulate int32 sums.

    refs: per view (zimg rows, ztxt rows) as (block_rows, D); per view (zimg
    chunk, ztxt chunk) as (c_pad, D); chunk ids (c_pad,); then the outputs
    row_hi, row_lo, col_hi, col_lo, each (block_rows,). Each inner step loads
    only ``block_d``-wide slices of its row and chunk tiles (`tile_logits`).
    """
    row_refs = refs[: 2 * n_views]
    chunk_refs = refs[2 * n_views : 4 * n_views]
    ids_ref = refs[4 * n_views]
    row_hi_ref, row_lo_ref, col_hi_ref, col_lo_ref = refs[4 * n_views + 1 :]

    block_rows, block_cols = row_refs[0].shape[0], block.block_cols
    row_ids = pl.program_id(0) * block_rows + jax.lax.broadcasted_iota(jnp.int32, (block_rows,), 0)
    temps = [(params_ref[2 * m], params_ref[2 * m + 1]) for m in range(n_views)]

    def body(j, acc):
        cols = compat.dslice(j * block_cols, block_cols)
        col_ids = ids_ref[cols]
        valid = (col_ids >= 0)[None, :]
        losses_row, losses_col = [], []
        for m in range(n_views):
            zimg_rows, ztxt_rows = row_refs[2 * m], row_refs[2 * m + 1]
            zimg_chunk, ztxt_chunk = chunk_refs[2 * m], chunk_refs[2 * m + 1]
            width = zimg_rows.shape[1]
            # S[k, q]: image k (row) against text q (chunk).
            logits = tile_logits(
                lambda s, r=zimg_rows: r[:, s], lambda s, c=ztxt_chunk: c[cols, s], width, block
            )
            losses_row.append(pair_losses_tile(logits, *temps[m], row_ids, col_ids))
            # S[q, k]: image q (chunk) against text k (row), as <ztxt_k, zimg_q>.
            logits = tile_logits(
                lambda s, r=ztxt_rows: r[:, s], lambda s, c=zimg_chunk: c[cols, s], width, block
            )
            losses_col.append(pair_losses_tile(logits, *temps[m], row_ids, col_ids))
        s_row = combine(*losses_row)  # (block_rows, block_cols)
        s_col = combine(*losses_col)
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


def compiled_blocks(block: BlockSizes, widths: tuple[int, ...], on_gpu: bool) -> BlockSizes:
    """`block` as a compiled kernel runs it: with ``block_d=0``, one slice of the
    widest width rounded up to a power of two (>= 16), since Triton loads need
    power-of-two shapes; on a GPU checked against `PROGRAM_BUDGET_BYTES` (a
    TPU's vector memory is another budget, not checked here)."""
    if not block.block_d:
        block = dataclasses.replace(block, block_d=max(16, pl.next_power_of_2(max(widths))))
    if on_gpu:
        check_program_bytes(block, widths)
    return block


@functools.partial(jax.jit, static_argnames=("combine", "block", "interpret"))
def _pair_score_sums(
    views: tuple[Embedded, ...],
    combine: Combine,
    chunk: Array,
    block: BlockSizes,
    interpret: bool,
) -> tuple[Array, Array]:
    if resolve_gpu_lowering(block.gpu_lowering, interpret) == "mosaic_gpu":
        from aced.kernels.pair_scores_mgpu import mgpu_pair_score_sums

        return mgpu_pair_score_sums(views, combine, chunk, block, interpret)
    n = views[0].zimg.shape[0]
    # Triton's parameters whenever the kernel is compiled for (or lowered to) a GPU.
    on_gpu = not interpret and jax.default_backend() != "tpu"
    if not interpret:
        block = compiled_blocks(block, tuple(v.zimg.shape[1] for v in views), on_gpu)
    block_rows, block_cols = block.block_rows, block.block_cols
    n_row_tiles = pl.cdiv(n, block_rows)
    ids, n_col_tiles, frac_bits = padded_chunk(chunk, block_cols)
    chunk = chunk.astype(jnp.int32)

    row_arrays, chunk_arrays, params = [], [], []
    for view in map(as_f32, views):
        # Zero columns up to whole block_d slices leave every product unchanged.
        zimg, ztxt = pad_width(view.zimg, block), pad_width(view.ztxt, block)
        row_arrays += [pad_rows(z, n_row_tiles * block_rows) for z in (zimg, ztxt)]
        chunk_arrays += [pad_rows(z[chunk], n_col_tiles * block_cols) for z in (zimg, ztxt)]
        params += [view.t, view.b]
    params = jnp.stack(params)

    def rows_spec(x):
        return compat.block_spec((block_rows, x.shape[1]), lambda i: (i, 0))

    def whole_spec(x):
        return compat.block_spec(x.shape, lambda i: (0,) * x.ndim)

    out_spec = compat.block_spec((block_rows,), lambda i: (i,))
    kernel = functools.partial(
        _sums_kernel,
        n_views=len(views),
        combine=combine,
        block=block,
        n_col_tiles=n_col_tiles,
        frac_bits=frac_bits,
    )
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


def default_blocks(interpret: bool) -> BlockSizes:
    """The tiles used when none are given: `BlockSizes()` in the interpreter,
    `GPU_BLOCKS` (within `PROGRAM_BUDGET_BYTES`) compiled."""
    return BlockSizes() if interpret else GPU_BLOCKS


def resolve_gpu_lowering(choice: str, interpret: bool) -> str:
    """``"mosaic_gpu"``, ``"triton"`` or ``"pallas"``: which kernel `choice` (a
    `BlockSizes.gpu_lowering`) runs. Interpreted: the Mosaic GPU kernel (in
    Pallas' GPU interpreter) only when chosen, else ``"pallas"`` (the Pallas
    interpreter). Compiled on a TPU: ``"pallas"``. On a GPU: as chosen, and for
    ``"auto"`` Mosaic GPU on a Hopper GPU (compute capability 9.x: wgmma) with
    JAX >= 0.10, Triton otherwise (and wherever no GPU is attached, e.g. lowering
    for CUDA from the CPU)."""
    if interpret:
        return "mosaic_gpu" if choice == "mosaic_gpu" else "pallas"
    if jax.default_backend() == "tpu":
        return "pallas"
    if choice != "auto":
        return choice
    device = jax.devices()[0]
    hopper = str(getattr(device, "compute_capability", "")).startswith("9")
    return "mosaic_gpu" if hopper and jax.__version_info__ >= (0, 10) else "triton"


def resolve_interpret(interpret: bool | None) -> bool:
    """``interpret`` as given, or for ``None`` (auto): the Pallas interpreter on CPU,
    the compiled kernel on an accelerator (GPU, TPU)."""
    return jax.default_backend() == "cpu" if interpret is None else interpret


@jaxtyped(typechecker=typechecker)
def blocked_pair_score_sums(
    views: tuple[Embedded, ...],
    combine: Combine,
    chunk: Int[Array, " c"],
    *,
    block: BlockSizes | None = None,
    interpret: bool | None = None,
) -> tuple[Float[Array, " B"], Float[Array, " B"]]:
    """Row and column sums of the pair scores over a chunk, never forming B x B.

    **Arguments:**

    - `views`: the views of the super-batch the score reads, in the order
      `combine` takes their losses (e.g. ``(learner, reference)`` for
      learnability); widths may differ between views.
    - `combine`: per-pair losses of each view -> pair scores, elementwise
      (e.g. ``aced.selection.PAIR_SCORES["learnability"].combine``); static.
    - `chunk`: global indices q of the chunk's examples, in [0, B).
    - `block`: tile sizes and the products' precision (default:
      `default_blocks`, `BlockSizes()` interpreted, `GPU_BLOCKS` compiled).
    - `interpret`: run the kernel in the Pallas interpreter (the only mode on
      CPU); ``False`` compiles it (on a GPU Mosaic GPU or Triton, by
      `BlockSizes.gpu_lowering`: `resolve_gpu_lowering`); ``None`` (the default):
      `resolve_interpret`, the interpreter on CPU and compiled elsewhere.

    **Returns:** ``(row_sums, col_sums)``, each (B,): ``row_sums[k] = sum_{q in
    chunk} S[k, q]`` and ``col_sums[k] = sum_{q in chunk} S[q, k]``, summed
    exactly in fixed point with ``31 - len(chunk).bit_length()`` fraction bits.
    """
    check_views(*views, names=tuple(f"view {i}" for i in range(len(views))))
    n = views[0].zimg.shape[0]
    interpret = resolve_interpret(interpret)
    if not interpret and jax.default_backend() == "cpu":
        raise ValueError("interpret=False needs a GPU; on CPU pass interpret=True")
    if not isinstance(chunk, jax.core.Tracer):
        if chunk.size and (int(chunk.min()) < 0 or int(chunk.max()) >= n):
            raise ValueError(f"chunk indices must lie in [0, B={n})")
    block = default_blocks(interpret) if block is None else block
    return _pair_score_sums(tuple(views), combine, chunk, block, interpret)


@jaxtyped(typechecker=typechecker)
def blocked_pair_score_sums_reference(
    views: tuple[Embedded, ...], combine: Combine, chunk: Int[Array, " c"]
) -> tuple[Float[Array, " B"], Float[Array, " B"]]:
    """`blocked_pair_score_sums` the plain way: the dense matrix, then f32 sums."""
    check_views(*views, names=tuple(f"view {i}" for i in range(len(views))))
    return _pair_score_sums_reference(tuple(views), combine, chunk)


@functools.partial(jax.jit, static_argnames=("combine",))
def _pair_score_sums_reference(views: tuple[Embedded, ...], combine: Combine, chunk: Array):
    losses = [sigmoid_pair_losses(v.zimg, v.ztxt, v.t, v.b) for v in map(as_f32, views)]
    scores = combine(*losses)  # (B, B)
    return scores[:, chunk].sum(axis=1), scores[chunk, :].sum(axis=0)
