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

    Why this kernel is not also lowered to Mosaic GPU (found by lowering it
    for Mosaic GPU from the CPU with jax 0.10.2): Mosaic GPU copies whole
    ``BlockSpec`` blocks to shared memory; its lane-level lowering has no rule
    for ``dot_general`` (products go through ``plgpu.wgmma`` on shared-memory
    tiles) nor for ``log1p``; and its resource estimation rejects the
    ``custom_jvp`` of ``jax.nn.log_sigmoid``. So the Mosaic GPU kernel is a
    separate rewrite around those primitives: `aced.kernels.pair_scores_mgpu`.
    """
    try:
        from jax.experimental.pallas import triton as pl_triton
    except ImportError:  # pragma: no cover - depends on the installed jaxlib
        return None
    params = getattr(pl_triton, "CompilerParams", None) or getattr(
        pl_triton, "TritonCompilerParams", None
    )
    return None if params is None else params(num_warps=num_warps, num_stages=num_stages)


def mgpu_interpret_params() -> Any:
    """Parameters that run a Mosaic GPU kernel in Pallas' GPU interpreter on CPU.

    The interpreter (JAX 0.10) simulates shared memory, TMA copies, barriers
    and wgmma. Its parameters are not exported under ``jax.experimental`` yet
    (``pallas_call`` and ``plgpu.kernel`` take them as ``interpret=``), so they
    come from ``jax._src`` here, the one place that names them. Returns
    ``None`` where the installed JAX has no GPU interpreter.
    """
    try:
        from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams
    except ImportError:  # pragma: no cover - depends on the installed jax
        return None
    return InterpretGPUParams()
