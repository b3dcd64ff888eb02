"""Pair scores tile by tile: the one formula the kernel and the dense path share.

A pair score combines the SigLIP pair losses of one or more models' views
(`aced.types.Embedded`) with a `Combine` function, e.g. learnability
``lambda learner_loss, reference_loss: learner_loss - reference_loss``. XLA's
matmul may round an entry differently depending on the operands' shapes (it
does on CPU), so every entry, in the Pallas kernel and in the dense matrix
alike, comes from `pair_losses_tile` on a ``(block_rows, D) x (block_cols, D)``
tile: then the blocked and the dense selection agree bit for bit. A tile's
logits sum the products of `BlockSizes.block_d`-wide slices of the width, in
order (`tile_logits`), in both paths alike.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Literal, get_args

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from aced.kernels.fixed_point import fixed_point_bits
from aced.types import Embedded

# Per-pair losses of each view a score reads, in order -> the pair scores.
Combine = Callable[..., Array]
Precision = Literal["highest", "tf32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
# How a compiled kernel lowers on an NVIDIA GPU (`BlockSizes.gpu_lowering`).
GpuLowering = Literal["auto", "triton", "mosaic_gpu"]
GPU_LOWERINGS: tuple[str, ...] = get_args(GpuLowering)


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tile sizes of the pair-score kernel.

    **Arguments:**

    - `block_rows`: super-batch rows per grid step.
    - `block_cols`: chunk columns per inner-loop step.
    - `precision`: of every tile's products. ``"highest"``: f32 throughout
      (the default); ``"tf32"``: XLA's default f32 precision, TF32 tensor
      cores on NVIDIA GPUs and f32 on CPU; ``"bf16"``: embeddings rounded to
      bfloat16, products accumulated in f32 (on any device). The dense path
      with the same `BlockSizes` uses the same products.

    - `block_d`: embedding columns per product: each tile's logits are the sum,
      in order, of the products of ``block_d``-wide slices of the width (the
      width zero-padded to a multiple of it). ``0`` (the default): the whole
      width in one product.
    - `gpu_lowering`: the kernel compiled for an NVIDIA GPU. ``"mosaic_gpu"``:
      `aced.kernels.pair_scores_mgpu`, wgmma tensor cores, Hopper (sm_90) only;
      it sets its own ``block_rows`` (64) and ``block_d`` (32, 64 for bf16) and
      runs ``"highest"`` as 3xTF32. ``"triton"``: `aced.kernels.pair_scores`
      through Pallas' Triton backend (any NVIDIA GPU JAX supports; deprecated
      in JAX 0.11). ``"auto"`` (the default): Mosaic GPU on a Hopper GPU, Triton
      on others (`resolve_gpu_lowering`). In the interpreter, ``"mosaic_gpu"``
      runs the Mosaic GPU kernel in Pallas' GPU interpreter; the others run
      `aced.kernels.pair_scores` in the Pallas interpreter (bit for bit with the
      dense path).

    `block_rows` and `block_cols` must be powers of two >= 16 (Triton's rule
    for block shapes), `block_rows` a multiple of `block_cols`, and `block_d`
    0 or a power of two >= 16. The defaults suit interpret mode on CPU, where
    tall row tiles amortise the per-step cost (measured with
    ``benchmarks/selection.py``). A program compiled for a GPU holds
    `program_bytes` of tiles, which must fit `PROGRAM_BUDGET_BYTES`;
    `GPU_BLOCKS` does at any width. The diagonal costs ``B * block_rows * D``
    multiply-adds per model, so very tall tiles make it dearer.
    """

    block_rows: int = 512
    block_cols: int = 64
    precision: str = "highest"  # one of PRECISIONS, checked below with a clear message
    block_d: int = 0
    gpu_lowering: str = "auto"  # one of GPU_LOWERINGS

    def __post_init__(self):
        block_rows, block_cols = self.block_rows, self.block_cols
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} must be one of {PRECISIONS}")
        if self.gpu_lowering not in GPU_LOWERINGS:
            raise ValueError(f"gpu_lowering={self.gpu_lowering!r} must be one of {GPU_LOWERINGS}")
        if block_rows < 16 or block_rows & (block_rows - 1):
            raise ValueError(f"{block_rows=} must be a power of two >= 16")
        if block_cols < 16 or block_cols & (block_cols - 1):
            raise ValueError(f"{block_cols=} must be a power of two >= 16")
        if block_rows % block_cols:
            raise ValueError(f"{block_rows=} must be a multiple of {block_cols=}")
        block_d = self.block_d
        if block_d and (block_d < 16 or block_d & (block_d - 1)):
            raise ValueError(f"{block_d=} must be 0 (the whole width) or a power of two >= 16")

    def width(self, d: int) -> int:
        """The width `d` zero-padded to a whole number of `block_d` slices."""
        return -(-d // self.block_d) * self.block_d if self.block_d else d

    def d_slices(self, d: int) -> list[slice]:
        """The column slices of a (padded) width `d` that one tile's products cover, in order."""
        step = self.block_d or d
        return [slice(start, start + step) for start in range(0, d, step)]


# Per-program memory a kernel compiled for a GPU may hold in tiles: a little under the
# 227 KiB of shared memory per block of an H100/H200 (232,448 bytes), leaving
# room for the compiler's own scratch.
PROGRAM_BUDGET_BYTES = 192 * 1024

# Tiles that fit `PROGRAM_BUDGET_BYTES` at any width for two views (132,096 bytes):
# the blocks a compiled kernel uses unless told otherwise. Not tuned on hardware.
GPU_BLOCKS = BlockSizes(64, 32, block_d=64)


def program_bytes(block: BlockSizes, widths: tuple[int, ...]) -> int:
    """Bytes of f32 tiles one program of the pair-score kernel holds at once.

    Per view of width d, with ``step = block_d or d``: a row slice and a
    chunk slice of both towers, ``2 * (block_rows + block_cols) * step``, and
    the two logit tiles, ``2 * block_rows * block_cols``; plus the four int32
    accumulators of ``block_rows`` each.
    """
    br, bc = block.block_rows, block.block_cols
    per_view = [2 * (br + bc) * (block.block_d or d) + 2 * br * bc for d in widths]
    return 4 * (sum(per_view) + 4 * br)


def check_program_bytes(block: BlockSizes, widths: tuple[int, ...]) -> None:
    """Raise a ValueError naming the fix if `block` exceeds `PROGRAM_BUDGET_BYTES`."""
    used = program_bytes(block, widths)
    if used > PROGRAM_BUDGET_BYTES:
        raise ValueError(
            f"{block} holds {used:,} bytes of tiles per program at widths {widths}, over the "
            f"budget of {PROGRAM_BUDGET_BYTES:,}; use smaller tiles, e.g. {GPU_BLOCKS} "
            "(--step.selection.block_rows=64 --step.selection.block_cols=32 "
            "--step.selection.block_d=64)"
        )


def dot_nt(
    x: Float[Array, "m D"], y: Float[Array, "n D"], precision: Precision = "highest"
) -> Float[Array, "m n"]:
    """``x @ y.T`` as one ``dot_general``: (m, D) . (D, n) -> (m, n), f32 accumulation,
    at `precision` (see `BlockSizes`)."""
    if precision == "bf16":
        x, y = x.astype(jnp.bfloat16), y.astype(jnp.bfloat16)
    return jax.lax.dot_general(
        x,
        y,
        (((1,), (1,)), ((), ())),
        precision=jax.lax.Precision.DEFAULT if precision == "tf32" else jax.lax.Precision.HIGHEST,
        preferred_element_type=jnp.float32,
    )


def tile_logits(
    rows: Callable[[slice], Array], cols: Callable[[slice], Array], width: int, block: BlockSizes
) -> Float[Array, "m n"]:
    """``<rows_k, cols_q>`` of one tile: the products of the `block.d_slices` of
    `width`, summed in order. `rows(s)` and `cols(s)` load slice `s` of the
    row and column tiles (an array slice, or a Pallas ref load)."""
    logits = None
    for s in block.d_slices(width):
        part = dot_nt(rows(s), cols(s), block.precision)
        logits = part if logits is None else logits + part
    return logits


def pair_losses_tile(
    logits: Float[Array, "m n"],
    t: Float[Array, ""],
    b: Float[Array, ""],
    row_ids: Int[Array, " m"],
    col_ids: Int[Array, " n"],
) -> Float[Array, "m n"]:
    """SigLIP pair losses of one tile's `tile_logits`, the formula of `sigmoid_pair_losses`.

    Pair (k, q) is positive iff the global indices agree, ``row_ids[k] ==
    col_ids[q]``. ``<zimg_q, ztxt_k>`` may also be computed as ``ztxt`` rows
    against ``zimg`` columns: XLA's products are symmetric in their operands.
    """
    labels = jnp.where(row_ids[:, None] == col_ids[None, :], 1.0, -1.0).astype(jnp.float32)
    return -jax.nn.log_sigmoid(labels * (t * logits + b))


def as_f32(view: Embedded) -> Embedded:
    return jax.tree.map(lambda x: x.astype(jnp.float32), view)


def pad_rows(x: Array, rows: int, value=0) -> Array:
    pad = [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    return jnp.pad(x, pad, constant_values=value)


def padded_chunk(chunk: Array, block_cols: int) -> tuple[Array, int, int]:
    """``(ids, n_col_tiles, frac_bits)`` of a kernel's chunk: its int32 indices padded with
    -1 (no example) to whole column tiles, their number, and the fixed-point fraction
    bits of sums over the chunk (`aced.kernels.fixed_point.fixed_point_bits`)."""
    n_col_tiles = -(-chunk.shape[0] // block_cols)
    ids = pad_rows(chunk.astype(jnp.int32), n_col_tiles * block_cols, value=-1)
    return ids, n_col_tiles, fixed_point_bits(chunk.shape[0])


def pad_width(z: Array, block: BlockSizes) -> Array:
    """`z` (n, d) with zero columns up to ``block.width(d)``: they leave every product unchanged."""
    return jnp.pad(z, ((0, 0), (0, block.width(z.shape[1]) - z.shape[1])))


def _tiled(views: tuple[Embedded, ...], size: int, block: BlockSizes) -> tuple:
    """Row tiles of zimg and column tiles of ztxt per view, plus global ids."""
    block_rows, block_cols = block.block_rows, block.block_cols
    n_rows = -(-size // block_rows) * block_rows
    n_cols = -(-size // block_cols) * block_cols
    tiles = []
    for view in map(as_f32, views):
        zimg, ztxt = pad_width(view.zimg, block), pad_width(view.ztxt, block)
        rows = pad_rows(zimg, n_rows).reshape(n_rows // block_rows, block_rows, -1)
        cols = pad_rows(ztxt, n_cols).reshape(n_cols // block_cols, block_cols, -1)
        tiles.append((rows, cols, view.t, view.b))
    row_ids = jnp.arange(n_rows, dtype=jnp.int32).reshape(-1, block_rows)
    col_ids = jnp.arange(n_cols, dtype=jnp.int32).reshape(-1, block_cols)
    return tiles, row_ids, col_ids


def _tile_scores(tiles, combine: Combine, i, j, row_ids, col_ids, block: BlockSizes) -> Array:
    losses = []
    for rows, cols, t, b in tiles:
        logits = tile_logits(
            lambda s: rows[i][:, s], lambda s: cols[j][:, s], rows.shape[-1], block
        )
        losses.append(pair_losses_tile(logits, t, b, row_ids[i], col_ids[j]))
    return combine(*losses)  # (block_rows, block_cols)


@functools.partial(jax.jit, static_argnames=("combine", "block"))
def tiled_pair_scores(
    views: tuple[Embedded, ...], combine: Combine, block: BlockSizes
) -> Float[Array, "B B"]:
    """The dense (B, B) pair-score matrix, evaluated tile by tile (plain jnp). Memory: O(B^2)."""
    size = views[0].zimg.shape[0]
    tiles, row_ids, col_ids = _tiled(views, size, block)

    def row_tile(i):
        def col_tile(j):
            return _tile_scores(tiles, combine, i, j, row_ids, col_ids, block)

        strip = jax.lax.map(col_tile, jnp.arange(col_ids.shape[0]))  # (nc, br, bc)
        return strip.transpose(1, 0, 2).reshape(block.block_rows, -1)

    matrix = jax.lax.map(row_tile, jnp.arange(row_ids.shape[0]))  # (nr, br, nc * bc)
    return matrix.reshape(-1, matrix.shape[-1])[:size, :size]


@functools.partial(jax.jit, static_argnames=("combine", "block"))
def tiled_pair_score_diagonal(
    views: tuple[Embedded, ...], combine: Combine, block: BlockSizes
) -> Float[Array, " B"]:
    """The diagonal ``S[k, k]`` of `tiled_pair_scores` in O(B·D) memory (plain jnp).

    Each row tile is multiplied by the `block_cols`-wide column tiles that hold
    its own examples, block_rows / block_cols products of the kernel's tile
    shape, so the values equal the dense matrix's diagonal bit for bit.
    Compute: B · block_rows · D per view, small beside one selection.
    """
    size = views[0].zimg.shape[0]
    block_rows, block_cols = block.block_rows, block.block_cols
    n_sub = block_rows // block_cols
    n_rows = -(-size // block_rows) * block_rows
    # Column tiles aligned with row tiles: row tile i holds column tiles i * n_sub + s.
    tiles, row_ids, col_ids = _tiled(views, n_rows, block)
    diag = jnp.arange(block_cols)

    def tile(ij):
        i, s = ij // n_sub, ij % n_sub
        scores = _tile_scores(tiles, combine, i, i * n_sub + s, row_ids, col_ids, block)
        return scores[s * block_cols + diag, diag]  # entries (k, k) of this tile

    return jax.lax.map(tile, jnp.arange(row_ids.shape[0] * n_sub)).reshape(-1)[:size]
