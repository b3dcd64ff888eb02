"""Zero-shot accuracy, prompt ensembling and retrieval recall: pure functions.

Ties count against the model: an image is classified right only when its
right candidate scores strictly above every other candidate, and a retrieval
rank counts every wrong item scoring at least as high as the right one. A
model whose embeddings are constant therefore scores 0, not a lucky 1.

Each function is compiled as one program per shape (`jax.jit`), not one per
operation: an evaluation calls them on many task shapes.
"""

import functools

import jax
import jax.numpy as jnp
from beartype import beartype as typechecker
from jaxtyping import Array, Float, Int, jaxtyped


@functools.partial(jax.jit, static_argnames="num_sets")
@jaxtyped(typechecker=typechecker)
def average_prompt_embeddings(
    text_embeddings: Float[Array, "T D"], set_ids: Int[Array, " T"], num_sets: int
) -> Float[Array, "S D"]:
    """CLIP's prompt ensembling: mean of each set's embeddings, re-normalised.

    **Arguments:**

    - `text_embeddings`: (T, D) L2-normalised embeddings of all templates.
    - `set_ids`: (T,) the prompt set of each template, in [0, num_sets).
    - `num_sets`: S.

    **Returns:** (S, D) L2-normalised class embeddings.
    """
    sums = jax.ops.segment_sum(text_embeddings, set_ids, num_segments=num_sets)  # (S, D)
    norms = jnp.linalg.norm(sums, axis=1, keepdims=True)
    return sums / jnp.maximum(norms, jnp.finfo(sums.dtype).tiny)


@jax.jit
@jaxtyped(typechecker=typechecker)
def zero_shot_accuracy(
    image_embeddings: Float[Array, "n D"],
    class_embeddings: Float[Array, "S D"],
    candidates: Int[Array, "n K"],
    labels: Int[Array, " n"],
) -> Float[Array, ""]:
    """Fraction of images whose right candidate strictly outscores the others.

    **Arguments:**

    - `image_embeddings`: (n, D); `class_embeddings`: (S, D) prompt-set embeddings.
    - `candidates`: (n, K) each image's candidate prompt sets.
    - `labels`: (n,) index in [0, K) of the right candidate.

    **Returns:** accuracy in [0, 1].
    """
    scores = jnp.einsum("nd,nkd->nk", image_embeddings, class_embeddings[candidates])  # (n, K)
    is_label = jnp.arange(candidates.shape[1])[None, :] == labels[:, None]  # (n, K)
    right = jnp.sum(jnp.where(is_label, scores, 0.0), axis=1)  # (n,)
    best_wrong = jnp.max(jnp.where(is_label, -jnp.inf, scores), axis=1)  # (n,)
    return jnp.mean((right > best_wrong).astype(jnp.float32))


@functools.partial(jax.jit, static_argnames="k")
@jaxtyped(typechecker=typechecker)
def retrieval_recalls(
    similarity: Float[Array, "n n"], k: int
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Image-to-text and text-to-image recall@k; pair i is (image i, text i).

    **Arguments:**

    - `similarity`: (n, n), entry (i, j) scores image i against text j.
    - `k`: the number of retrieved items that may contain the right one.

    **Returns:** ``(i2t, t2i)``: fractions of images (texts) whose right text
    (image) ranks among the top k.
    """
    n = similarity.shape[0]
    diag = jnp.diagonal(similarity)  # (n,)
    wrong = ~jnp.eye(n, dtype=bool)
    i2t_rank = jnp.sum(
        wrong & (similarity >= diag[:, None]), axis=1
    )  # wrong texts at least as close
    t2i_rank = jnp.sum(
        wrong & (similarity >= diag[None, :]), axis=0
    )  # wrong images at least as close
    return jnp.mean((i2t_rank < k).astype(jnp.float32)), jnp.mean(
        (t2i_rank < k).astype(jnp.float32)
    )
