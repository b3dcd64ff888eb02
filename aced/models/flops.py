"""Integer FLOP helpers of the towers' building blocks (matrix products only).

Two FLOPs per multiply-add; only matrix products are counted (patch
embedding, q/k/v/out projections, attention ``QK^T`` and ``AV``, MLPs, the
MAP pooling head, projection heads). Elementwise work (LayerNorm, softmax,
GELU, residual and bias adds, mean pooling) and embedding look-ups are left
out: for the shapes aced trains they are a few percent at most
(``tests/test_flops.py`` checks the totals against XLA's ``cost_analysis``).
The configs' ``forward_flops`` methods compose these.
"""


def attention_flops(num_queries: int, num_inputs: int, width: int) -> int:
    """Multi-head attention of `num_queries` tokens over `num_inputs` tokens.

    ``2*Q*W*W`` (q) + ``2*2*T*W*W`` (k, v) + ``2*Q*T*W`` (QK^T, all heads) +
    ``2*Q*T*W`` (AV) + ``2*Q*W*W`` (output projection).
    """
    projections = 2 * (2 * num_queries + 2 * num_inputs) * width * width
    scores_and_mix = 2 * 2 * num_queries * num_inputs * width
    return projections + scores_and_mix


def mlp_flops(num_tokens: int, width: int, mlp_dim: int) -> int:
    """fc1 and fc2 over `num_tokens` tokens: ``2 * 2 * T * W * M``."""
    return 2 * 2 * num_tokens * width * mlp_dim


def encoder_flops(num_tokens: int, width: int, depth: int, mlp_dim: int) -> int:
    """`depth` self-attention + MLP blocks over `num_tokens` tokens."""
    block = attention_flops(num_tokens, num_tokens, width) + mlp_flops(num_tokens, width, mlp_dim)
    return depth * block


def pair_logits_flops(n_rows: int, n_cols: int, width: int) -> int:
    """One ``(n_rows, D) @ (D, n_cols)`` similarity matrix."""
    return 2 * n_rows * n_cols * width
