"""`benchmarks/matmul_floor.py`'s accounting: the products it finds in a jaxpr, their
counts under `scan`, their FLOPs, and the einsum it times for each in torch."""

import pathlib
import sys

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "benchmarks"))
from matmul_floor import count_dots, einsum_spec, flops  # noqa: E402


def test_products_are_counted_once_per_scan_iteration_and_through_the_gradient():
    def loss(w, xs):
        def body(h, x):
            return jnp.tanh(h @ w + x), None

        h, _ = lax.scan(body, jnp.zeros((4, 8)), xs)
        return jnp.sum(jax.checkpoint(lambda h: h @ w.T)(h))

    w, xs = jnp.ones((8, 8)), jnp.ones((5, 4, 8))
    forward = count_dots(jax.make_jaxpr(loss)(w, xs).jaxpr)
    assert sum(forward.values()) == 5 + 1
    both = count_dots(jax.make_jaxpr(jax.grad(loss))(w, xs).jaxpr)
    # Forward 5 + 1; backward: the scan's 5 products' input and weight gradients (10),
    # the last product's input and weight gradients (2).
    assert sum(both.values()) == 6 + 10 + 2
    assert sum(flops(key) * n for key, n in forward.items()) == 6 * 2 * 4 * 8 * 8


@st.composite
def dot_problems(draw):
    """Random ``dot_general`` operands and dimension numbers, batch and contracting dims
    at random positions."""
    n_batch, n_contract = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    n_free_lhs, n_free_rhs = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    size = st.integers(1, 3)
    batch = [draw(size) for _ in range(n_batch)]
    contract = [draw(size) for _ in range(n_contract)]
    kinds_lhs = draw(st.permutations(["b"] * n_batch + ["c"] * n_contract + ["f"] * n_free_lhs))
    kinds_rhs = draw(st.permutations(["b"] * n_batch + ["c"] * n_contract + ["f"] * n_free_rhs))

    def layout(kinds):
        shape, where = [], {"b": [], "c": []}
        counters = {"b": 0, "c": 0}
        for axis, kind in enumerate(kinds):
            if kind == "f":
                shape.append(draw(size))
                continue
            sizes = batch if kind == "b" else contract
            shape.append(sizes[counters[kind]])
            where[kind].append(axis)
            counters[kind] += 1
        return tuple(shape), where

    lhs, lw = layout(kinds_lhs)
    rhs, rw = layout(kinds_rhs)
    dims = ((tuple(lw["c"]), tuple(rw["c"])), (tuple(lw["b"]), tuple(rw["b"])))
    return lhs, rhs, dims


@hypothesis.given(dot_problems(), st.integers(0, 2**32 - 1))
def test_the_einsum_computes_the_same_product(problem, seed):
    lhs, rhs, dims = problem
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(lhs), rng.standard_normal(rhs)
    key = (lhs, rhs, dims, "float64")
    want = np.asarray(
        lax.dot_general(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), dims)
    )
    got = np.einsum(einsum_spec(key), a, b)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    multiply_adds = int(np.prod(want.shape)) * int(np.prod([lhs[i] for i in dims[0][0]]))
    assert flops(key) == 2 * multiply_adds
