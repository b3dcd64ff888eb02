"""Pallas kernels, each with its ``*_reference`` in plain jnp in the same file.

`pair_scores`: the blocked row / column sums of pair scores (JEST's
conditional logits at scale); `tiling`: the tile formula it shares with the
dense path; `fixed_point`: the order-free sums that make both agree;
`pair_scores_mgpu`: the same sums as a Mosaic GPU kernel on Hopper's wgmma
tensor cores (imported when used).
"""

from aced.kernels.fixed_point import fixed_point_bits, fixed_point_split, fixed_point_sum
from aced.kernels.pair_scores import (
    blocked_pair_score_sums,
    blocked_pair_score_sums_reference,
    default_blocks,
    resolve_gpu_lowering,
    resolve_interpret,
)
from aced.kernels.tiling import (
    GPU_BLOCKS,
    GPU_LOWERINGS,
    PRECISIONS,
    PROGRAM_BUDGET_BYTES,
    BlockSizes,
    Combine,
    GpuLowering,
    Precision,
    check_program_bytes,
    pair_losses_tile,
    program_bytes,
    tile_logits,
    tiled_pair_score_diagonal,
    tiled_pair_scores,
)

__all__ = [
    "GPU_BLOCKS",
    "GPU_LOWERINGS",
    "PRECISIONS",
    "PROGRAM_BUDGET_BYTES",
    "BlockSizes",
    "GpuLowering",
    "Precision",
    "Combine",
    "blocked_pair_score_sums",
    "blocked_pair_score_sums_reference",
    "check_program_bytes",
    "default_blocks",
    "resolve_gpu_lowering",
    "resolve_interpret",
    "fixed_point_bits",
    "fixed_point_split",
    "fixed_point_sum",
    "pair_losses_tile",
    "program_bytes",
    "tile_logits",
    "tiled_pair_score_diagonal",
    "tiled_pair_scores",
]
