"""The Mosaic GPU pair-score kernel: in Pallas' GPU interpreter against the dense sums,
lowered for a Hopper GPU at real sizes, and compiled where a Hopper GPU is attached."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_kernel_pair_scores import lowered_for_cuda, models, views

from aced.kernels import (
    GPU_LOWERINGS,
    BlockSizes,
    blocked_pair_score_sums,
    compat,
    resolve_gpu_lowering,
    tiled_pair_scores,
)
from aced.kernels.pair_scores_mgpu import (
    MGPU_ROWS,
    mgpu_block_d,
    mgpu_blocks,
    mgpu_pair_score_sums,
    tf32_split,
)
from aced.selection import joint_select, joint_select_blocked, score_matrix
from aced.train.config import preset, updated
from aced.types import Embedded

HOPPER = jax.default_backend() == "gpu" and str(
    getattr(jax.devices()[0], "compute_capability", "")
).startswith("9")
MODES = [
    pytest.param(
        True,
        marks=pytest.mark.skipif(
            compat.mgpu_interpret_params() is None, reason="this jax has no GPU interpreter"
        ),
    ),
    pytest.param(False, marks=pytest.mark.skipif(not HOPPER, reason="wgmma needs a Hopper GPU")),
]


def dense_sums(score_views, combine, chunk, precision):
    """Row and column sums over `chunk` of the dense matrix, its products at `precision`."""
    matrix = tiled_pair_scores(score_views, combine, BlockSizes(16, 16, precision=precision))
    return matrix[:, chunk].sum(axis=1), matrix[chunk, :].sum(axis=0)


def tolerance(precision: str, interpret: bool, count: int) -> float:
    """Allowed |kernel - dense| of a sum of `count` pair scores (|t| = 10, unit vectors).

    The interpreter multiplies f32 operands exactly (so tf32 and 3xTF32 give the f32
    products) and bf16 operands as the dense path does; what is left is the fixed-point
    truncation (< count * 2**-20 here) and log(1 + exp) for log1p. On hardware TF32
    rounds each operand to 10 mantissa bits: about 5e-3 per logit at t = 10, 1e-2 per
    learnability score (two views)."""
    per_score = 1e-2 if precision == "tf32" and not interpret else 1e-5
    return 1e-4 + per_score * count


@pytest.mark.parametrize("interpret", MODES)
@pytest.mark.parametrize("precision", ["highest", "tf32", "bf16"])
@hypothesis.settings(max_examples=3, deadline=None)
@hypothesis.given(
    n=st.integers(1, 150),
    widths=st.tuples(st.integers(1, 72), st.integers(1, 40)),
    chunk_size=st.integers(1, 70),
    block_cols=st.sampled_from([16, 32, 64]),
    score=st.sampled_from(["learnability", "easy_reference", "hard_learner"]),
    seed=st.integers(0, 2**16),
)
def test_mosaic_gpu_sums_match_the_dense_matrix(
    interpret, precision, n, widths, chunk_size, block_cols, score, seed
):
    # Rows beyond one 64-row tile, chunks beyond one column tile, widths beyond one
    # 128-byte slice and below it (zero-padded), views of different widths.
    args = models(seed, n, *widths, 10.0, -10.0)
    score_views, combine = views(args, score)
    rng = np.random.default_rng(seed)
    chunk = jnp.asarray(rng.choice(n, size=min(chunk_size, n), replace=False), jnp.int32)
    block = BlockSizes(64, block_cols, precision=precision, gpu_lowering="mosaic_gpu")
    got = mgpu_pair_score_sums(score_views, combine, chunk, block, interpret)
    want = dense_sums(score_views, combine, chunk, precision)
    atol = tolerance(precision, interpret, chunk.size)
    for g, w in zip(got, want, strict=True):
        assert g.shape == (n,)
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=0, atol=atol)


def test_the_mosaic_gpu_kernel_is_reached_through_the_public_function_and_the_config():
    # blocked_pair_score_sums with gpu_lowering="mosaic_gpu" runs it in the GPU
    # interpreter on CPU; StepConfig's selection.gpu_lowering reaches BlockSizes.
    if compat.mgpu_interpret_params() is None:
        pytest.skip("this jax has no GPU interpreter")
    score_views, combine = views(models(3, 90, 24, 40, 10.0, -10.0), "learnability")
    chunk = jnp.arange(0, 90, 4, dtype=jnp.int32)
    step = updated(preset("acid").step, {"selection.gpu_lowering": "mosaic_gpu"})
    block = step.selection.block_sizes(interpret=True)
    assert block.gpu_lowering == "mosaic_gpu"
    got = blocked_pair_score_sums(score_views, combine, chunk, block=block, interpret=True)
    direct = mgpu_pair_score_sums(score_views, combine, chunk, block, True)
    pallas = blocked_pair_score_sums(score_views, combine, chunk, interpret=True)
    for g, d, p in zip(got, direct, pallas, strict=True):
        np.testing.assert_array_equal(g, d)
        np.testing.assert_allclose(g, p, rtol=0, atol=tolerance("highest", True, chunk.size))


@pytest.mark.parametrize("precision", ["highest", "tf32", "bf16"])
def test_the_mosaic_gpu_kernel_lowers_for_a_hopper_gpu_at_real_sizes(precision):
    # Lowered for CUDA from the CPU: Pallas' Mosaic GPU lowering checks the register
    # layouts, wgmma's operands and the shared memory (at most 227 KiB), and emits one
    # Mosaic GPU call. B = 65,536, a chunk of 819, a learner of D = 256 and a reference
    # of D = 1152.
    block = BlockSizes(64, 64, precision=precision, gpu_lowering="mosaic_gpu")
    text = lowered_for_cuda(
        lambda v, combine, ids: mgpu_pair_score_sums(v, combine, ids, block, False)
    )
    assert text.count("stablehlo.custom_call @mosaic_gpu") == 1
    assert "xla.gpu.triton" not in text


def test_tf32_split_is_exact_and_its_head_has_ten_mantissa_bits():
    x = jnp.asarray(
        np.random.default_rng(0).standard_normal(4096) * np.logspace(-30, 30, 4096), jnp.float32
    )
    hi, lo = tf32_split(x)
    np.testing.assert_array_equal(hi + lo, x)
    bits = np.asarray(jax.lax.bitcast_convert_type(hi, jnp.uint32))
    assert not (bits & 0x1FFF).any()  # the 13 low mantissa bits of f32 are zero
    assert (np.abs(np.asarray(lo)) <= np.abs(np.asarray(x)) * 2.0**-10).all()


def test_blocks_and_lowering_choice():
    assert GPU_LOWERINGS == ("auto", "triton", "mosaic_gpu")
    assert mgpu_block_d("highest") == mgpu_block_d("tf32") == 32 and mgpu_block_d("bf16") == 64
    assert mgpu_blocks(BlockSizes(512, 32, "bf16")) == BlockSizes(MGPU_ROWS, 32, "bf16", 64)
    with pytest.raises(ValueError, match="exceeds the Mosaic GPU kernel's 64 rows"):
        mgpu_blocks(BlockSizes(512, 128))
    with pytest.raises(ValueError, match="gpu_lowering='cuda' must be one of"):
        BlockSizes(gpu_lowering="cuda")
    # Interpreted: the Mosaic GPU kernel only when chosen, else the Pallas interpreter.
    assert resolve_gpu_lowering("mosaic_gpu", True) == "mosaic_gpu"
    assert resolve_gpu_lowering("auto", True) == resolve_gpu_lowering("triton", True) == "pallas"
    if jax.default_backend() == "cpu":  # compiled for a GPU from here: no Hopper device seen
        assert resolve_gpu_lowering("auto", False) == "triton"
        assert resolve_gpu_lowering("mosaic_gpu", False) == "mosaic_gpu"
    if HOPPER:
        assert resolve_gpu_lowering("auto", False) == "mosaic_gpu"


def test_a_joint_selection_through_the_mosaic_gpu_kernel_picks_the_dense_selection():
    # The whole blocked selection (diagonal, 8 chunks of conditional sums) with the
    # Mosaic GPU kernel in the GPU interpreter: the dense path's indices. Its sums differ
    # from the dense ones by rounding only, far below the gaps between the logits the
    # draw compares on this super-batch.
    if compat.mgpu_interpret_params() is None:
        pytest.skip("this jax has no GPU interpreter")
    args = models(5, 128, 24, 40, 10.0, -10.0)
    learner, reference = Embedded(*args[:4]), Embedded(*args[4:])
    key = jax.random.key(2)
    dense = joint_select(key, score_matrix(learner, reference, "learnability"), 32, 8)
    block = BlockSizes(64, 32, gpu_lowering="mosaic_gpu")
    blocked = joint_select_blocked(
        key, learner, reference, "learnability", 32, 8, block=block, interpret=True
    )
    np.testing.assert_array_equal(blocked, dense)
