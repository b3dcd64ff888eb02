"""Pallas Mosaic GPU kernel of the pair-score sums, for Hopper (sm_90a) tensor cores.

The same sums as `aced.kernels.pair_scores.blocked_pair_score_sums` (row and
column sums of the pair scores over a chunk, exact in fixed point), written for
the lowering that current JAX uses on NVIDIA GPUs: Mosaic GPU, with its
products on ``plgpu.wgmma`` (warpgroup matrix multiply-accumulate) instead of
Triton's ``dot``. Layout in the manner of
``jax/experimental/pallas/ops/gpu/attention_mgpu.py``:

- ``plgpu.kernel`` over row tiles of ``MGPU_ROWS`` (64) super-batch rows, one
  warpgroup each (wgmma's M is 64);
- in each, a loop over the chunk's column tiles of ``block_cols``; per column
  tile and view, a ``plgpu.emit_pipeline`` over ``block_d``-wide slices of the
  width copies the row and chunk slices to shared memory (double-buffered,
  TMA) and accumulates the tile's logits with ``wgmma`` into registers;
- the SigLIP pair losses, the score's `combine`, the chunk's validity mask and
  the fixed-point split run on the accumulators; their row sums are carried
  in int32 registers and written once per row tile.

Precision (`aced.kernels.tiling.BlockSizes.precision`): ``"tf32"`` gives wgmma
the f32 embeddings (TF32 tensor cores), ``"bf16"`` bfloat16 copies (f32
accumulation); ``"highest"`` splits each f32 embedding into a TF32 head and
its remainder (``x = hi + lo``, split in XLA before the kernel) and sums three
products, ``hi.hi + hi.lo + lo.hi``, the 3xTF32 scheme, close to f32.
wgmma reads 128-byte rows of shared memory, so ``block_d`` is 32 (f32) or 64
(bf16). The pair loss uses ``log(1 + exp(-|x|))`` (Mosaic GPU has no
``log1p``), so the kernel agrees with the dense path to rounding, not bit for
bit.

Checked without a GPU in two ways: the Mosaic GPU interpreter (Pallas'
``InterpretGPUParams``, `aced.kernels.compat.mgpu_interpret_params`) runs
the kernel on CPU, simulating shared memory, TMA copies, barriers and wgmma,
and the tests compare it with the dense path; and the kernel is lowered for
CUDA from the CPU, which runs Pallas' Mosaic GPU lowering (layouts, shared
memory, wgmma operand checks). Neither compiles PTX or runs on hardware:
``benchmarks/accelerator_check.py`` does, on a GPU.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from aced.kernels import compat
from aced.kernels.fixed_point import fixed_point_split, fixed_point_value
from aced.kernels.tiling import BlockSizes, Combine, as_f32, pad_rows, pad_width, padded_chunk
from aced.types import Embedded

# Super-batch rows per program: wgmma's M on Hopper, one warpgroup.
MGPU_ROWS = 64
# The width of one shared-memory row wgmma reads, and the swizzle that goes with it.
_SWIZZLE_BYTES = 128


def mgpu_block_d(precision: str) -> int:
    """Embedding columns per wgmma slice: one 128-byte shared-memory row."""
    return _SWIZZLE_BYTES // (2 if precision == "bf16" else 4)


def mgpu_blocks(block: BlockSizes) -> BlockSizes:
    """`block` as the Mosaic GPU kernel runs it: ``MGPU_ROWS`` rows, ``block_d`` set by
    the precision, ``block_cols`` as given (wgmma's N; at most the 64 rows, so that
    two f32 accumulators of 64 x block_cols stay in registers)."""
    if block.block_cols > MGPU_ROWS:
        raise ValueError(
            f"block_cols={block.block_cols} exceeds the Mosaic GPU kernel's {MGPU_ROWS} rows; "
            f"use block_cols <= {MGPU_ROWS} (--step.selection.block_cols={MGPU_ROWS})"
        )
    return dataclasses.replace(block, block_rows=MGPU_ROWS, block_d=mgpu_block_d(block.precision))


def tf32_split(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``x = hi + lo`` exactly, with ``hi`` x's top 10 mantissa bits (a TF32 value)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32) & jnp.uint32(0xFFFFE000)
    hi = jax.lax.bitcast_convert_type(bits, jnp.float32)
    return hi, x - hi


def operand_parts(z: jax.Array, precision: str) -> list[jax.Array]:
    """The arrays wgmma reads for `z` at `precision`: [z], [bf16(z)] or [hi, lo]."""
    if precision == "bf16":
        return [z.astype(jnp.bfloat16)]
    if precision == "highest":
        return list(tf32_split(z))
    return [z]


# (lhs part, rhs part) products summed per tile: 3xTF32 for "highest".
_TERMS = {"tf32": ((0, 0),), "bf16": ((0, 0),), "highest": ((0, 0), (0, 1), (1, 0))}


def _pair_losses(logits, t, b, row_ids, col_ids):
    """SigLIP pair losses ``softplus(-label * (t * logits + b))`` of one tile, with
    ``log(1 + exp(-|x|))`` for ``log1p``."""
    labels = jnp.where(row_ids == col_ids, 1.0, -1.0).astype(jnp.float32)
    x = -labels * (t * logits + b)
    return jnp.maximum(x, 0.0) + jnp.log(1.0 + jnp.exp(-jnp.abs(x)))


def _kernel(
    *refs,
    n_views: int,
    n_parts: int,
    terms: tuple[tuple[int, int], ...],
    widths: tuple[int, ...],
    combine: Combine,
    block: BlockSizes,
    n_col_tiles: int,
    frac_bits: int,
    interpreting: bool,
):
    """One row tile. refs: params (2V, BC) f32 (each view's t and b, repeated over the
    columns); per view and part: zimg, ztxt (n_pad, d_pad) and their chunk rows
    (c_pad, d_pad); chunk ids (c_pad,); the four int32 outputs (n_pad,); scratch.
    `interpreting`: Pallas' GPU interpreter has no rules for layout casts (register
    layouts mean nothing there), so they are left out of the interpreted kernel."""
    n_in = 1 + 4 * n_views * n_parts + 1
    params_gmem, *arrays, ids_gmem = refs[:n_in]
    outs = refs[n_in : n_in + 4]
    params_smem, ids_smem, out_smem, barrier = refs[n_in + 4 :]
    br, bc, bd = block.block_rows, block.block_cols, block.block_d
    i = jax.lax.axis_index("rows")
    wgmma = plgpu.Layout.WGMMA

    def cast(x, layout):  # a register layout for the Mosaic GPU lowering
        return x if interpreting else plgpu.layout_cast(x, layout)

    def rhs(tile):
        """A chunk tile as wgmma's (bd, bc) right operand. Compiled, the (bc, bd) tile's
        transposed view: K-major, the only layout wgmma takes for 32-bit operands. The
        interpreter's wgmma takes no transposed view, so there the arrays come
        transposed instead."""
        return tile if interpreting else plgpu.transpose_ref(tile, (1, 0))

    plgpu.copy_gmem_to_smem(params_gmem, params_smem, barrier.at[0])
    plgpu.barrier_wait(barrier.at[0])
    row_ids = i * br + cast(jax.lax.broadcasted_iota(jnp.int32, (br, bc), 0), wgmma)

    def column_vector(ref, k=None):  # (bc,) from shared memory, broadcast over the rows
        ref = ref if k is None else ref.at[k]
        vec = ref[...] if interpreting else plgpu.load(ref, (), layout=wgmma.reduce(0))
        return jax.lax.broadcast_in_dim(vec, (br, bc), [1])

    transforms = (
        plgpu.TilingTransform((8, bd)),
        plgpu.SwizzleTransform(_SWIZZLE_BYTES),
    )
    row_spec = plgpu.BlockSpec((br, bd), lambda k: (i, k), transforms=transforms)

    def view_logits(m, j):
        """Both logit tiles of view m against column tile j: (image rows . text chunk,
        text rows . image chunk), accumulated over the width's slices."""
        if interpreting:  # chunk arrays come transposed, (d_pad, c_pad): see `rhs`
            col_spec = plgpu.BlockSpec((bd, bc), lambda k: (k, j))
        else:
            col_spec = plgpu.BlockSpec((bc, bd), lambda k: (j, k), transforms=transforms)
        view_arrays = arrays[4 * n_parts * m : 4 * n_parts * (m + 1)]

        def scoped(acc_row, acc_col):
            def body(_, *tiles):
                zimg, ztxt, zimg_c, ztxt_c = (
                    tiles[q * n_parts : (q + 1) * n_parts] for q in range(4)
                )
                for a, b in terms:
                    plgpu.wgmma(acc_row, zimg[a], rhs(ztxt_c[b]))
                    plgpu.wgmma(acc_col, ztxt[a], rhs(zimg_c[b]))
                plgpu.wgmma_wait(0)  # the next step's copies reuse these buffers

            plgpu.emit_pipeline(
                body,
                grid=(widths[m] // bd,),
                in_specs=[row_spec] * (2 * n_parts) + [col_spec] * (2 * n_parts),
                max_concurrent_steps=2,
            )(*view_arrays)
            return acc_row[...], acc_col[...]

        acc = plgpu.ACC((br, bc), jnp.float32)
        return pl.run_scoped(scoped, acc, acc)

    def column_tile(j, sums):
        plgpu.copy_gmem_to_smem(ids_gmem.at[pl.ds(j * bc, bc)], ids_smem, barrier.at[1])
        plgpu.barrier_wait(barrier.at[1])
        col_ids = column_vector(ids_smem)
        losses_row, losses_col = [], []
        for m in range(n_views):
            t, b = column_vector(params_smem, 2 * m), column_vector(params_smem, 2 * m + 1)
            logits_row, logits_col = view_logits(m, j)
            losses_row.append(_pair_losses(logits_row, t, b, row_ids, col_ids))
            losses_col.append(_pair_losses(logits_col, t, b, row_ids, col_ids))
        valid = jnp.where(col_ids >= 0, 1.0, 0.0).astype(jnp.float32)
        parts = (
            *fixed_point_split(combine(*losses_row) * valid, frac_bits),
            *fixed_point_split(combine(*losses_col) * valid, frac_bits),
        )
        return tuple(s + p.sum(axis=1) for s, p in zip(sums, parts))

    zeros = cast(jnp.zeros((br,), jnp.int32), wgmma.reduce(1))
    sums = jax.lax.fori_loop(0, n_col_tiles, column_tile, (zeros,) * 4)
    for r, total in enumerate(sums):
        out_smem[r] = total
    plgpu.commit_smem()
    for r, out in enumerate(outs):
        plgpu.copy_smem_to_gmem(out_smem.at[r], out.at[pl.ds(i * br, br)])
    plgpu.wait_smem_to_gmem(0)


def mgpu_pair_score_sums(
    views: tuple[Embedded, ...],
    combine: Combine,
    chunk: jax.Array,
    block: BlockSizes,
    interpret: bool,
) -> tuple[jax.Array, jax.Array]:
    """``(row_sums, col_sums)`` of `aced.kernels.blocked_pair_score_sums` from this kernel:
    compiled (``interpret=False``, a Hopper GPU, or lowered for one) or in Pallas' GPU
    interpreter on CPU (``interpret=True``)."""
    params = compat.mgpu_interpret_params() if interpret else None
    if interpret and params is None:
        raise ValueError(
            f"this jax ({jax.__version__}) has no Pallas GPU interpreter to run the Mosaic GPU "
            "kernel on CPU; use gpu_lowering='auto' (the Pallas interpreter) or jax >= 0.10"
        )
    return _mgpu_pair_score_sums(tuple(views), combine, chunk, mgpu_blocks(block), params)


@functools.partial(jax.jit, static_argnames=("combine", "block", "interpret"))
def _mgpu_pair_score_sums(
    views: tuple[Embedded, ...],
    combine: Combine,
    chunk: jax.Array,
    block: BlockSizes,
    interpret: Any,
) -> tuple[jax.Array, jax.Array]:
    br, bc = block.block_rows, block.block_cols
    n = views[0].zimg.shape[0]
    n_pad = pl.cdiv(n, br) * br
    ids, n_col_tiles, frac_bits = padded_chunk(chunk, bc)
    chunk = chunk.astype(jnp.int32)

    arrays, params, widths = [], [], []
    for view in map(as_f32, views):
        widths.append(block.width(view.zimg.shape[1]))  # whole block_d slices
        rows, chunks = [], []
        for z in (view.zimg, view.ztxt):
            parts = operand_parts(pad_width(z, block), block.precision)
            rows.append([pad_rows(p, n_pad) for p in parts])
            chunks.append([pad_rows(p[chunk], n_col_tiles * bc) for p in parts])
            if interpret is not None:
                chunks[-1] = [p.T for p in chunks[-1]]
        arrays += [*rows[0], *rows[1], *chunks[0], *chunks[1]]
        params += [view.t, view.b]
    params = jnp.broadcast_to(jnp.stack(params)[:, None], (len(params), bc))

    kernel = functools.partial(
        _kernel,
        n_views=len(views),
        n_parts=1 + max(max(term) for term in _TERMS[block.precision]),
        terms=_TERMS[block.precision],
        widths=tuple(widths),
        combine=combine,
        block=block,
        n_col_tiles=n_col_tiles,
        frac_bits=frac_bits,
        interpreting=interpret is not None,
    )
    row_hi, row_lo, col_hi, col_lo = plgpu.kernel(
        kernel,
        out_type=[jax.ShapeDtypeStruct((n_pad,), jnp.int32)] * 4,
        scratch_types=[
            plgpu.SMEM(params.shape, jnp.float32),
            plgpu.SMEM((bc,), jnp.int32),
            plgpu.SMEM((4, br), jnp.int32),
            plgpu.Barrier(num_barriers=2),
        ],
        grid=(n_pad // br,),
        grid_names=("rows",),
        interpret=interpret,
    )(params, *arrays, ids)
    row_sums = fixed_point_value(row_hi, row_lo, frac_bits)[:n]
    col_sums = fixed_point_value(col_hi, col_lo, frac_bits)[:n]
    return row_sums, col_sums
