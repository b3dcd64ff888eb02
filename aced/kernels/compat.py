"""Version-specific Pallas names, kept in one place.

Pallas is experimental and renames things between JAX releases; the kernels
import these helpers instead of the names themselves, so a JAX upgrade touches
this file alone.
"""

from collections.abc import Callable, Sequence
from typing import Any

from jax.experimental import pallas as pl


def block_spec(block_shape: Sequence[int], index_map: Callable[..., Any]) -> pl.BlockSpec:
    """``pl.BlockSpec`` with the block shape first (the order since JAX 0.4.31)."""
    return pl.BlockSpec(tuple(block_shape), index_map)


def dslice(start: Any, size: int) -> Any:
    """A dynamic slice of ``size`` elements from ``start`` (``pl.ds``)."""
    return pl.ds(start, size)


def triton_compiler_params(num_warps: int, num_stages: int) -> Any:
    """Compiler parameters that select the Triton backend on GPU.

    Since JAX 0.7 ``pallas_call`` picks Mosaic GPU unless given Triton's
    ``CompilerParams`` (earlier releases named it ``TritonCompilerParams``).
    Returns ``None`` where the Triton module is absent.

    Why not Mosaic GPU (found by lowering the kernel for it from the CPU with
    jax 0.10.2): it copies whole ``BlockSpec`` blocks to shared memory, so
    the chunk arrays (c_pad x D) alone ask for 0.8-3.7 MB against 232,448
    bytes; its lane-level lowering has no rule for ``dot_general`` (products
    go through ``plgpu.wgmma`` on shared-memory tiles, with a sequential grid
    and scratch accumulators) nor for ``log1p``; its resource estimation
    rejects the ``custom_jvp`` of ``jax.nn.log_sigmoid``; and JAX recommends
    ``plgpu.kernel`` over ``pallas_call`` for it. A Mosaic GPU kernel is a
    rewrite around those primitives, not a change of parameters.
    """
    try:
        from jax.experimental.pallas import triton as pl_triton
    except ImportError:  # pragma: no cover - depends on the installed jaxlib
        return None
    params = getattr(pl_triton, "CompilerParams", None) or getattr(
        pl_triton, "TritonCompilerParams", None
    )
    return None if params is None else params(num_warps=num_warps, num_stages=num_stages)
