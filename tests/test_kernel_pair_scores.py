"""The Pallas pair-score kernel against its plain-jnp reference (interpreted and compiled)."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aced.kernels import (
    GPU_BLOCKS,
    PROGRAM_BUDGET_BYTES,
    BlockSizes,
    blocked_pair_score_sums,
    blocked_pair_score_sums_reference,
    check_program_bytes,
    default_blocks,
    fixed_point_bits,
    fixed_point_split,
    fixed_point_sum,
    pair_scores,
    program_bytes,
    resolve_interpret,
    tile_logits,
    tiled_pair_score_diagonal,
    tiled_pair_scores,
)
from aced.kernels.fixed_point import MAX_FIXED_POINT_COUNT, fixed_point_error_bound
from aced.kernels.pair_scores import compiled_blocks
from aced.kernels.tiling import dot_nt, pad_width
from aced.losses import sigmoid_pair_losses
from aced.selection import PAIR_SCORES
from aced.selection.checks import check_counts
from aced.types import Embedded

INTERPRET = [
    # Bit for bit against the dense path under XLA's default code generation (xla_flags.py).
    pytest.param(True, marks=pytest.mark.default_codegen),
    pytest.param(
        False,
        marks=pytest.mark.skipif(
            jax.default_backend() not in ("gpu", "tpu"), reason="compiled Pallas needs a GPU/TPU"
        ),
    ),
]


def models(seed: int, n: int, d_learner: int, d_reference: int, t: float, b: float):
    """Flat (learner, reference) arguments: L2-normalised embeddings, temperature, bias."""
    rng = np.random.default_rng(seed)
    out = []
    for d in (d_learner, d_learner, d_reference, d_reference):
        z = rng.standard_normal((n, d))
        out.append(jnp.asarray(z / np.linalg.norm(z, axis=1, keepdims=True), jnp.float32))
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return (out[0], out[1], f32(t), f32(b), out[2], out[3], f32(10.0), f32(-10.0))


def views(args, score: str):
    """The views a registered score reads from flat (learner, reference) arguments, and its combine."""
    entry = PAIR_SCORES[score]
    return entry.views(Embedded(*args[:4]), Embedded(*args[4:])), entry.combine


# Tiles of the f32 products the reference computes (bf16: test_precision_* below), with
# the width in one product and in block_d slices (d up to 43 spans up to three slices).
blocks = st.sampled_from(
    [
        BlockSizes(16, 16),
        BlockSizes(32, 16),
        BlockSizes(64, 32),
        BlockSizes(32, 16, block_d=16),
        BlockSizes(16, 16, block_d=32),
        None,
    ]
)


@pytest.mark.parametrize("interpret", INTERPRET)
@hypothesis.settings(max_examples=10)
@hypothesis.given(
    n=st.integers(1, 90),
    d=st.integers(1, 40),
    data=st.data(),
    score=st.sampled_from(list(PAIR_SCORES)),
    block=blocks,
    seed=st.integers(0, 2**16),
    t=st.floats(1.0, 30.0),
    bias=st.floats(-12.0, 2.0),
)
def test_kernel_matches_reference(interpret, n, d, data, score, block, seed, t, bias):
    args = models(seed, n, d, d + 3, t, bias)
    c = data.draw(st.integers(1, n), label="chunk size")
    chunk = jnp.asarray(np.random.default_rng(seed).choice(n, size=c, replace=False), jnp.int32)
    score_views, combine = views(args, score)
    rows, cols = blocked_pair_score_sums(
        score_views, combine, chunk, block=block, interpret=interpret
    )
    want_rows, want_cols = blocked_pair_score_sums_reference(score_views, combine, chunk)
    # Fixed-point truncation (< 2**-frac_bits per term) plus f32 rounding of the reference.
    atol = c * (2.0 ** -fixed_point_bits(c) + 1e-6 * (abs(t) + abs(bias) + 20.0))
    np.testing.assert_allclose(rows, want_rows, rtol=1e-6, atol=atol)
    np.testing.assert_allclose(cols, want_cols, rtol=1e-6, atol=atol)
    if interpret:
        # Through XLA the kernel and the tile-by-tile dense matrix agree bit for bit.
        block = default_blocks(True) if block is None else block
        scores = tiled_pair_scores(score_views, combine, block)
        bits = fixed_point_bits(c)
        # One compile of the order-free sums per shape (eager ops compile one by one).
        sums = jax.jit(
            lambda s: (fixed_point_sum(s[:, chunk], bits), fixed_point_sum(s[chunk].T, bits))
        )
        want_rows, want_cols = sums(scores)
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_array_equal(cols, want_cols)
        diagonal = tiled_pair_score_diagonal(score_views, combine, block)
        np.testing.assert_array_equal(diagonal, np.diagonal(np.asarray(scores)))


def test_dense_matrix_and_diagonal_match_sigmoid_pair_losses():
    args = models(7, 53, 5, 4, 15.0, -6.0)
    want = sigmoid_pair_losses(*args[:4]) - sigmoid_pair_losses(*args[4:])
    score_views, combine = views(args, "learnability")
    got = tiled_pair_scores(score_views, combine, BlockSizes(32, 16))
    # Losses up to ~t + |b| cancel in the difference: f32 rounding of that size.
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-5)
    diagonal = tiled_pair_score_diagonal(score_views, combine, BlockSizes(32, 16))
    np.testing.assert_allclose(diagonal, jnp.diagonal(want), rtol=1e-6, atol=2e-5)


@hypothesis.settings(max_examples=25)
@hypothesis.given(
    values=st.lists(
        st.floats(-3000.0, 3000.0, width=32, allow_subnormal=False), min_size=1, max_size=40
    ),
    count=st.integers(1, 5000),
)
def test_fixed_point_split_is_exact(values, count):
    # Subnormals are excluded: XLA flushes them to zero on CPU and GPU alike.
    bits = fixed_point_bits(count)
    x = jnp.asarray(values, jnp.float32)[None, :]
    hi, lo = fixed_point_split(x, bits)
    assert bool((jnp.abs(lo) < 2**bits).all())
    bound = 2.0**bits
    clipped = np.clip(np.asarray(x, np.float64), -bound, bound)
    rebuilt = np.asarray(hi, np.float64) + np.asarray(lo, np.float64) * 2.0**-bits
    # truncation toward zero: same sign, smaller by less than one fixed-point step
    assert np.all(np.abs(clipped - rebuilt) < 2.0**-bits)
    assert np.all(np.abs(rebuilt) <= np.abs(clipped))
    # count terms of the largest magnitude still fit in int32
    assert count * bound < 2**31


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(block_rows=24), "block_rows=24 must be a power of two"),
        (dict(block_rows=8, block_cols=8), "block_rows=8 must be a power of two >= 16"),
        (dict(block_cols=48), "block_cols=48 must be a power of two"),
        (dict(block_rows=16, block_cols=32), "block_rows=16 must be a multiple of block_cols=32"),
        (dict(precision="fp8"), "precision='fp8' must be one of"),
        (dict(block_d=24), r"block_d=24 must be 0 \(the whole width\) or a power of two >= 16"),
        (dict(block_d=8), r"block_d=8 must be 0 .* power of two >= 16"),
    ],
)
def test_block_sizes_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BlockSizes(**kwargs)


def test_block_d_tiles_the_width_in_order():
    # 40 columns in 16-wide slices: zero-padded to 48, three products summed in order.
    block = BlockSizes(16, 16, block_d=16)
    assert block.width(40) == 48 and BlockSizes().width(40) == 40
    assert block.d_slices(48) == [slice(0, 16), slice(16, 32), slice(32, 48)]
    assert BlockSizes().d_slices(40) == [slice(0, 40)]
    x, y = (
        jnp.asarray(np.random.default_rng(s).standard_normal((16, 40)), jnp.float32) for s in (1, 2)
    )
    xp, yp = (pad_width(z, block) for z in (x, y))
    got = tile_logits(lambda s: xp[:, s], lambda s: yp[:, s], 48, block)
    want = sum(
        (dot_nt(xp[:, s], yp[:, s]) for s in block.d_slices(48)[1:]), dot_nt(xp[:, :16], yp[:, :16])
    )
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(
        got, np.asarray(x, np.float64) @ np.asarray(y, np.float64).T, atol=1e-5
    )
    # The dense matrix on 16-wide slices is the same matrix, up to f32 rounding.
    score_views, combine = views(models(3, 37, 40, 21, 12.0, -8.0), "learnability")
    np.testing.assert_allclose(
        tiled_pair_scores(score_views, combine, BlockSizes(32, 16, block_d=16)),
        tiled_pair_scores(score_views, combine, BlockSizes(32, 16)),
        rtol=1e-6,
        atol=2e-5,
    )


def test_program_bytes_and_the_budget():
    # BlockSizes() at D = 768 (two views): 4 * (2 * (2 * 576 * 768 + 2 * 512 * 64) + 4 * 512).
    assert program_bytes(BlockSizes(), (768, 768)) == 7_610_368
    # GPU_BLOCKS hold the same at any width: 4 * (2 * (2 * 96 * 64 + 2 * 64 * 32) + 4 * 64).
    for widths in [(64, 64), (256, 1152), (1152, 1152)]:
        assert program_bytes(GPU_BLOCKS, widths) == 132_096 <= PROGRAM_BUDGET_BYTES
        check_program_bytes(GPU_BLOCKS, widths)
    with pytest.raises(ValueError, match=r"7,610,368 bytes .* budget of 196,608.*block_d=64"):
        check_program_bytes(BlockSizes(), (768, 768))
    # A compiled kernel takes block_d=0 to one power-of-two slice and checks the budget.
    assert compiled_blocks(BlockSizes(16, 16), (3, 40), True) == BlockSizes(16, 16, block_d=64)
    with pytest.raises(ValueError, match="over the budget"):
        compiled_blocks(BlockSizes(), (256, 1152), True)
    # On a TPU (on_gpu False) the GPU's budget is not applied.
    assert compiled_blocks(BlockSizes(), (256, 1152), False) == BlockSizes(block_d=2048)
    assert default_blocks(True) == BlockSizes() and default_blocks(False) == GPU_BLOCKS


def lowered_for_cuda(score_sums, widths=(256, 1152), size=65_536, chunk=819) -> str:
    """The StableHLO text of ``score_sums(views, combine, ids)`` for learnability at real
    sizes (a learner and a reference of `widths`, B = `size`, a chunk of `chunk`),
    lowered for CUDA from the CPU: no GPU needed."""
    entry = PAIR_SCORES["learnability"]

    def sums(z_learner, z_reference, t, ids):
        learner, reference = (
            Embedded(z_learner, z_learner, t, t),
            Embedded(z_reference, z_reference, t, t),
        )
        return score_sums(entry.views(learner, reference), entry.combine, ids)

    spec = jax.ShapeDtypeStruct
    lowered = (
        jax.jit(sums)
        .trace(
            spec((size, widths[0]), jnp.float32),
            spec((size, widths[1]), jnp.float32),
            spec((), jnp.float32),
            spec((chunk,), jnp.int32),
        )
        .lower(lowering_platforms=("cuda",))
    )
    return lowered.as_text()


def test_compiled_kernel_lowers_for_an_nvidia_gpu_at_real_sizes():
    # One Triton call, one program per row tile.
    text = lowered_for_cuda(
        lambda v, combine, ids: pair_scores._pair_score_sums(v, combine, ids, GPU_BLOCKS, False)
    )
    assert text.count("xla.gpu.triton") == 1
    assert f"grid_x = {65_536 // GPU_BLOCKS.block_rows} " in text


def test_bad_arguments_are_rejected():
    args = models(0, 10, 3, 3, 10.0, -10.0)
    chunk = jnp.arange(3, dtype=jnp.int32)
    score_views, combine = views(args, "learnability")
    with pytest.raises(ValueError, match=r"must lie in \[0, B=10\)"):
        blocked_pair_score_sums(score_views, combine, chunk + 8)
    short = Embedded(*models(0, 9, 3, 3, 10.0, -10.0)[:4])
    with pytest.raises(ValueError, match="same super-batch"):
        blocked_pair_score_sums((score_views[0], short), combine, chunk)
    if jax.default_backend() == "cpu":
        with pytest.raises(ValueError, match="interpret=True"):
            blocked_pair_score_sums(score_views, combine, chunk, interpret=False)


def test_interpret_is_automatic_and_overridable():
    on_cpu = jax.default_backend() == "cpu"
    assert resolve_interpret(None) is on_cpu  # the interpreter on CPU, compiled elsewhere
    assert resolve_interpret(True) is True and resolve_interpret(False) is False
    score_views, combine = views(models(0, 40, 3, 5, 10.0, -10.0), "learnability")
    chunk = jnp.arange(0, 40, 3, dtype=jnp.int32)
    auto = blocked_pair_score_sums(score_views, combine, chunk)
    chosen = blocked_pair_score_sums(score_views, combine, chunk, interpret=on_cpu)
    for x, y in zip(auto, chosen, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("sign", ["positive", "negative", "mixed"])
@pytest.mark.parametrize("count", [1, 7, 256, 4096, MAX_FIXED_POINT_COUNT])
def test_fixed_point_sums_stay_within_the_stated_bound(sign, count):
    # One-signed rows as easy_reference (-reference loss) and hard_learner (learner loss)
    # give them, at magnitudes of pair losses, and mixed learnability-like rows.
    rng = np.random.default_rng(count)
    values = rng.exponential(3.0, (4, count))
    values = {"positive": values, "negative": -values, "mixed": rng.normal(0, 5, (4, count))}[
        sign
    ].astype(np.float32)
    got = np.asarray(fixed_point_sum(jnp.asarray(values), fixed_point_bits(count)), np.float64)
    exact = values.astype(np.float64).sum(axis=1)
    for row, want, g in zip(values, exact, got, strict=True):
        bound = fixed_point_error_bound(count, float(np.abs(row.astype(np.float64)).sum()))
        assert abs(g - want) <= bound, (g, want, bound)
    # the bound is not loose by orders of magnitude: truncation alone is near count * step / 2
    if count >= 256 and sign != "mixed":
        step = 2.0 ** -fixed_point_bits(count)
        assert np.abs(got - exact).max() > 0.1 * count * step


def test_chunks_beyond_the_fixed_point_bound_are_refused():
    size = 2 * MAX_FIXED_POINT_COUNT + 2
    with pytest.raises(ValueError, match=r"use more chunks: n_chunks >= 3"):
        check_counts(size, size, 2)
    check_counts(size, 2 * MAX_FIXED_POINT_COUNT, 2)  # at the bound: allowed
    check_counts(size, size, 1, chunk_sums=False)  # one draw sums nothing: any size
